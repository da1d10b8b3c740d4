"""CTC pieces that depend on the model family: output lengths, attention masks and the loss.

Hugging Face CTC models come in two input kinds. The wav2vec2 family (wav2vec2, HuBERT, WavLM,
data2vec-audio, ...) reads raw samples (``input_values``) through strided convolutions, and its
output length follows from the input length in samples. Filter-bank models (Parakeet, LASR,
w2v-BERT) read feature frames (``input_features``), and their output length follows from the
number of valid frames in the attention mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from asr_lightning.model.families import mask_argument

#: Label value that marks padding in ``batch["labels"]`` (Hugging Face convention).
LABEL_PAD = -100


def uses_attention_mask(config: Any) -> bool:
    """Whether the Hugging Face convention gives this model an attention mask.

    wav2vec2-family checkpoints whose feature encoder uses group norm (``feat_extract_norm ==
    "group"``, e.g. wav2vec2-base) ship feature extractors with ``return_attention_mask: false``:
    their group norm would see the padding anyway. asr-lightning's own runtimes always pass the
    mask, and :func:`asr_lightning.model.padding.guard_padding` keeps that group norm off the
    padding; this only decides what a new model's saved feature extractor asks
    ``transformers.pipeline`` to do.

    Args:
        config: the model's ``PretrainedConfig``.
    """
    return getattr(config, "feat_extract_norm", "layer") != "group"


def model_inputs(model: Any, inputs: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """The keyword arguments of ``model(...)`` for a padded batch: its input and its mask.

    The mask goes under the name the family takes (``attention_mask``, or ``padding_mask`` for
    OmniASR), always: with :func:`asr_lightning.model.padding.guard_padding` it makes every
    family but SEW/SEW-D give each row the outputs it gets alone.

    Args:
        model: a Hugging Face ``*ForCTC`` model.
        inputs: ``(B, T)`` samples or ``(B, T, F)`` feature frames, zero-padded.
        attention_mask: ``(B, T)`` 1 on valid samples/frames.
    """
    kwargs = {model.main_input_name: inputs}
    name = mask_argument(model)
    if name is not None:
        kwargs[name] = attention_mask
    return kwargs


def output_lengths(model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    """True number of output frames of each row of a padded batch.

    Args:
        model: a Hugging Face ``*ForCTC`` model.
        batch: the collator's batch: ``input_lengths`` (samples) for waveform models,
            ``attention_mask`` over feature frames for filter-bank models (over samples for
            OmniASR, whose subsampling starts from the waveform).

    Returns:
        ``(B,)`` LongTensor on the batch's device.
    """
    if hasattr(model, "_get_subsampling_output_length"):  # Parakeet, LASR, OmniASR, Granite
        lengths = model._get_subsampling_output_length(batch["attention_mask"].sum(-1))
    elif model.main_input_name == "input_features":  # w2v-BERT: frames -> adapter strides
        lengths = model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
    else:  # wav2vec2 family: samples -> conv feature encoder strides
        lengths = model._get_feat_extract_output_lengths(batch["input_lengths"])
    return torch.as_tensor(lengths).to(torch.long)


def ctc_loss(
    logits: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    blank_id: int,
    reduction: str = "mean",
    zero_infinity: bool = True,
) -> torch.Tensor:
    """CTC loss computed in float32, whatever the autocast or model precision.

    In fp16 the log-softmax over a large vocabulary under/overflows and the loss turns infinite
    or NaN; computing it from ``logits.float()`` outside autocast keeps it finite.

    Args:
        logits: ``(B, T, V)`` raw logits of the model.
        lengths: ``(B,)`` true output frames of each row (see :func:`output_lengths`).
        labels: ``(B, L)`` label ids padded with -100.
        blank_id: the CTC blank id (:func:`asr_lightning.model.families.blank_token_id`).
        reduction: ``"mean"`` (per-utterance loss divided by its label length, then averaged,
            like Hugging Face models) or ``"sum"``.
        zero_infinity: zero the loss of rows whose labels cannot fit their frames rather than
            letting ``inf`` reach the optimizer.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
        label_mask = labels != LABEL_PAD
        targets = labels.masked_select(label_mask)  # (sum L_i,) concatenated labels
        return F.ctc_loss(
            log_probs,
            targets,
            lengths.to(torch.long),
            label_mask.sum(-1),
            blank=blank_id,
            reduction=reduction,
            zero_infinity=zero_infinity,
        )
