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

#: Label value that marks padding in ``batch["labels"]`` (Hugging Face convention).
LABEL_PAD = -100


def uses_attention_mask(config: Any) -> bool:
    """Whether the model should be given the attention mask.

    wav2vec2-family checkpoints whose feature encoder uses group norm (``feat_extract_norm ==
    "group"``, e.g. wav2vec2-base) were trained on unpadded audio and must not get a mask: the
    Hugging Face docs say to pass zero-padded input alone. Layer-norm models and filter-bank
    models (Parakeet, w2v-BERT) need it so padding does not leak into the valid frames.

    Args:
        config: the model's ``PretrainedConfig``.
    """
    return getattr(config, "feat_extract_norm", "layer") != "group"


def output_lengths(model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    """True number of output frames of each row of a padded batch.

    Args:
        model: a Hugging Face ``*ForCTC`` model.
        batch: the collator's batch: ``input_lengths`` (samples) for waveform models,
            ``attention_mask`` over feature frames for filter-bank models.

    Returns:
        ``(B,)`` LongTensor on the batch's device.
    """
    if hasattr(model, "_get_subsampling_output_length"):  # Parakeet, LASR: frames -> subsampled
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
        blank_id: the CTC blank id (the model config's ``pad_token_id``).
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
