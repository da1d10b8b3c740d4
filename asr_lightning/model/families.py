"""What differs between the CTC families of ``transformers``, read from the installed version.

Every model type in ``transformers``' ``MODEL_FOR_CTC_MAPPING_NAMES`` is supported: wav2vec2,
wav2vec2-conformer, wav2vec2-bert, HuBERT, WavLM, data2vec-audio, SEW, SEW-D, UniSpeech,
UniSpeech-SAT, Parakeet, LASR, OmniASR and Granite Speech 5 in transformers 5.24. They differ in
the name of their attention mask (OmniASR's is ``padding_mask``), in where their blank token id
lives (OmniASR has a ``blank_token_id`` apart from ``pad_token_id``), in whether padding can
change a clip's outputs (:mod:`asr_lightning.model.padding`). Granite Speech 5's feature
extractor needs torchaudio, which asr-lightning does not require (see the README).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from asr_lightning.errors import ModelError

log = logging.getLogger(__name__)

#: Families whose padded batches change the outputs of valid frames even with
#: :func:`asr_lightning.model.padding.guard_padding`, and why. Evaluation and inference run
#: their clips one at a time (see :func:`padding_exact`).
PADDING_INEXACT = {
    "sew": "its encoder averages pairs of frames, so a clip's last odd frame is pooled with "
    "padding in a batch but dropped when the clip runs alone",
    "sew-d": "its encoder averages pairs of frames, so a clip's last odd frame is pooled with "
    "padding in a batch but dropped when the clip runs alone",
}
#: Families whose padded batches are tested to give each clip its outputs alone (with the
#: padding guard); ``tests/model/test_families.py`` holds every installed family to its entry.
PADDING_EXACT = frozenset(
    {
        "data2vec-audio",
        "granite_speech5_ctc",
        "hubert",
        "lasr_ctc",
        "omniasr_ctc",
        "parakeet_ctc",
        "unispeech",
        "unispeech-sat",
        "wav2vec2",
        "wav2vec2-bert",
        "wav2vec2-conformer",
        "wavlm",
    }
)
#: Attribute names of the CTC output layer, by family (wav2vec2 family; Parakeet, LASR, OmniASR).
HEAD_NAMES = ("lm_head", "ctc_head")
#: Keyword names of the attention mask, in the order they are looked for.
MASK_ARGUMENTS = ("attention_mask", "padding_mask")


def ctc_model_types() -> tuple[str, ...]:
    """The model types ``AutoModelForCTC`` can build in the installed ``transformers``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

    return tuple(MODEL_FOR_CTC_MAPPING_NAMES)


def blank_token_id(config: Any) -> int:
    """The CTC blank id of a model configuration: ``blank_token_id`` where the family has one
    (OmniASR), else ``pad_token_id`` (every other family, and every vocabulary built from data).
    """
    blank = getattr(config, "blank_token_id", None)
    if blank is None:
        blank = config.pad_token_id
    if blank is None:
        raise ModelError(
            f"the {config.model_type} configuration has no pad_token_id, which is the CTC blank: "
            "set pad_token_id in its config.json"
        )
    return int(blank)


def head_settings(config: Any, vocab_size: int, blank: int) -> dict[str, int]:
    """The configuration settings of a new CTC head for a vocabulary.

    Args:
        config: the model's configuration (decides whether ``blank_token_id`` is set too).
        vocab_size: the head's number of outputs.
        blank: the id of the CTC blank (``<pad>`` in vocabularies built from data).
    """
    settings = {"vocab_size": vocab_size, "pad_token_id": blank}
    if hasattr(config, "blank_token_id"):
        settings["blank_token_id"] = blank
    return settings


def mask_argument(model: Any) -> str | None:
    """The keyword under which ``model.forward`` takes the attention mask, or ``None``."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in MASK_ARGUMENTS if name in parameters), None)


def head_module(model: Any) -> Any:
    """The CTC output layer (``lm_head`` for the wav2vec2 family, ``ctc_head`` otherwise)."""
    for name in HEAD_NAMES:
        if hasattr(model, name):
            return getattr(model, name)
    raise ModelError(f"{type(model).__name__} has none of the CTC heads {HEAD_NAMES}")


def padding_exact(model_type: str) -> bool:
    """Whether padded batches give every clip of this family the outputs it gets alone.

    A family asr-lightning has not been tested on counts as inexact, so that its clips are
    evaluated and transcribed one at a time rather than silently differently.
    """
    return model_type in PADDING_EXACT


def padding_warning(model_type: str) -> str | None:
    """What a user of an inexact family is told at start, or ``None`` for exact families."""
    if padding_exact(model_type):
        return None
    reason = PADDING_INEXACT.get(
        model_type, "asr-lightning has not been tested on it (a family newer than this release)"
    )
    return (
        f"{model_type} models are not padding-exact: {reason}. Validation, test and inference "
        "therefore run each clip alone, so that scores and transcripts do not depend on "
        "batching (slower); training batches stay padded, as in the Hugging Face recipe."
    )


#: Names of the subsampling front end of filter-bank families (Parakeet, OmniASR; LASR).
SUBSAMPLING_NAMES = ("subsampling", "subsampler")


def freeze_front_end(model: Any) -> str | None:
    """Stop training the model's convolutional front end; returns what was frozen, or None.

    wav2vec2-family models freeze their waveform feature encoder (``freeze_feature_encoder``,
    as the Hugging Face recipe does); Parakeet, LASR and OmniASR their subsampling module.
    Families with neither (w2v-BERT, Granite Speech 5) freeze nothing.
    """
    if hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
        return "feature encoder"
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in SUBSAMPLING_NAMES:
            for parameter in module.parameters():
                parameter.requires_grad = False
            return name
    return None


def layerdrop(config: Any) -> float:
    """The probability of skipping each encoder layer in training, also for composite configs
    (Parakeet's ``encoder_config``); 0.0 for a family without LayerDrop."""
    for owner in (
        config,
        getattr(config, "encoder_config", None),
        getattr(config, "audio_config", None),
    ):
        value = getattr(owner, "layerdrop", None)
        if value is not None:
            return float(value)
    return 0.0


def hidden_size(config: Any) -> int:
    """The encoder's hidden size, also for composite configs (Parakeet, LASR, OmniASR)."""
    for owner in (
        config,
        getattr(config, "encoder_config", None),
        getattr(config, "audio_config", None),
    ):
        size = getattr(owner, "hidden_size", None)
        if size is not None:
            return int(size)
    raise ModelError(f"the {config.model_type} configuration has no hidden_size")
