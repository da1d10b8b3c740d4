"""Building Hugging Face CTC models and their processors, pretrained or from scratch.

Two ways in:

* pretrained: a hub id or a local folder (``save_pretrained`` layout) holding the model, its
  feature extractor and usually its tokenizer;
* from scratch: an architecture name (``model_type``) plus architecture overrides, with the
  tokenizer built from the data's vocabulary.

:func:`build_processor` needs no model weights, so the datamodule can get the feature extractor
(for the collator) and the tokenizer (for labels) before the model exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Mapping
from typing import Any, Literal

from asr_lightning.errors import ConfigError, ModelError, VocabularyError
from asr_lightning.model.ctc import uses_attention_mask

log = logging.getLogger(__name__)

#: Architectures :func:`build_config` can create from scratch (Hugging Face ``model_type``).
ScratchModelType = Literal[
    "wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "parakeet_ctc"
]
#: Token used as CTC blank and padding in every vocabulary built from data.
BLANK_TOKEN = "<pad>"
#: Attribute names of the CTC output layer, by family (wav2vec2 family, Parakeet/LASR).
HEAD_NAMES = ("lm_head", "ctc_head")
#: Sub-configuration that holds the encoder's settings in composite configs (Parakeet).
ENCODER_CONFIG = "encoder_config"


def _field_names(config_class: type) -> set[str]:
    if dataclasses.is_dataclass(config_class):
        return {field.name for field in dataclasses.fields(config_class)}
    return set(vars(config_class()))  # transformers < 5: plain attributes


def _derived_names(config_class: type) -> set[str]:
    if not dataclasses.is_dataclass(config_class):
        return set()
    return set(vars(config_class())) - _field_names(config_class)


def with_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of ``config`` with ``overrides`` applied, derived values recomputed.

    Keys of a composite config's encoder (``hidden_size`` for Parakeet) may be given flat; they
    are routed to ``encoder_config``.

    Args:
        config: a ``PretrainedConfig``.
        overrides: attribute names and values, e.g. ``{"hidden_size": 256, "layerdrop": 0.0}``.

    Raises:
        ConfigError: a key is not an option of this architecture.
    """
    config_class = type(config)
    top_fields = _field_names(config_class)
    encoder = getattr(config, ENCODER_CONFIG, None)
    encoder_fields = _field_names(type(encoder)) if encoder is not None else set()
    # Values the class derives from its fields (wav2vec2's num_feat_extract_layers) are left out
    # so that they are derived again from the overridden fields.
    derived = _derived_names(config_class)
    values = {key: value for key, value in config.to_dict().items() if key not in derived}
    encoder_derived = _derived_names(type(encoder)) if encoder is not None else set()
    encoder_values = {
        key: value
        for key, value in (values.get(ENCODER_CONFIG) or {}).items()
        if key not in encoder_derived
    }
    for key, value in overrides.items():
        if key in top_fields and key != ENCODER_CONFIG:
            values[key] = value
        elif key in encoder_fields:
            encoder_values[key] = value
        else:
            known = sorted((top_fields | encoder_fields) - {ENCODER_CONFIG})
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"{key!r} is not an option of {config.model_type!r} models "
                f"({config_class.__name__}).{hint} Remove it from the model settings."
            )
    if encoder is not None:
        values[ENCODER_CONFIG] = encoder_values
    return config_class(**values)


def vocab_size(vocab: Mapping[str, int]) -> int:
    """Number of outputs a CTC head needs for ``vocab`` (ids are 0-based)."""
    return max(vocab.values()) + 1


def blank_id(vocab: Mapping[str, int]) -> int:
    """Id of the blank/pad token of a vocabulary built from data."""
    if BLANK_TOKEN not in vocab:
        raise VocabularyError(
            f"the vocabulary has no {BLANK_TOKEN!r} token, which serves as the CTC blank; "
            "build it with asr_lightning.text.vocab.build_vocab"
        )
    return vocab[BLANK_TOKEN]


def build_config(
    model_type: str, vocab: Mapping[str, int], overrides: Mapping[str, Any] | None = None
) -> Any:
    """Configuration of a new model whose CTC head fits ``vocab``.

    Args:
        model_type: Hugging Face architecture name, one of :data:`ScratchModelType`.
        vocab: token -> id of the data's vocabulary; ``<pad>`` is the CTC blank.
        overrides: architecture settings that differ from that architecture's defaults.
    """
    from transformers import CONFIG_MAPPING

    if model_type not in ScratchModelType.__args__:
        raise ConfigError(
            f"cannot build a {model_type!r} model from scratch; choose one of "
            f"{', '.join(ScratchModelType.__args__)} or give model_name_or_path"
        )
    default = CONFIG_MAPPING[model_type]()
    head = {"vocab_size": vocab_size(vocab), "pad_token_id": blank_id(vocab)}
    return with_overrides(default, {**dict(overrides or {}), **head})


def reset_convolutions(model: Any) -> int:
    """Give a new Parakeet model's convolutions PyTorch's fan-in scaled initialization.

    transformers draws every convolution of a new Parakeet model from N(0, 0.02), whatever its
    fan-in: through the three convolutions of the subsampling front-end (fan-ins 9, 9 and 64)
    the input shrinks about 300-fold, and a small model trained from scratch sits on the CTC
    blank plateau for hundreds of steps. ``reset_parameters`` (Kaiming-uniform, as in NeMo)
    keeps the signal's scale.

    Returns:
        the number of convolutions re-initialized.
    """
    import torch

    convolutions = [
        module
        for module in model.modules()
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d))
    ]
    for module in convolutions:
        module.reset_parameters()
    return len(convolutions)


def scratch_feature_extractor(config: Any) -> Any:
    """The feature extractor a new model of this configuration reads its input from."""
    from transformers import ParakeetFeatureExtractor, Wav2Vec2FeatureExtractor

    if config.model_type == "parakeet_ctc":
        return ParakeetFeatureExtractor(feature_size=config.encoder_config.num_mel_bins)
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=uses_attention_mask(config),
    )


def _checkpoint_tokenizer(model_name_or_path: str) -> tuple[Any | None, str]:
    """The checkpoint's tokenizer, or None and why it could not be loaded."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_name_or_path), ""
    except (OSError, ValueError, TypeError, KeyError) as err:
        log.info("no usable tokenizer in %s (%s)", model_name_or_path, err)
        return None, str(err).strip()


def _vocab_fits(tokenizer: Any, vocab: Mapping[str, int]) -> bool:
    """Whether every token of ``vocab`` has the same id in ``tokenizer``."""
    known = tokenizer.get_vocab()
    return all(known.get(token) == index for token, index in vocab.items())


def resolve_tokenizer(
    model_name_or_path: str | None, vocab: Mapping[str, int] | None
) -> tuple[Any, bool]:
    """The tokenizer to train with, and whether it is the checkpoint's own.

    A checkpoint's tokenizer is kept when no vocabulary is given or when the given one agrees
    with it; otherwise the tokenizer is built from ``vocab`` (and the model needs a new head).
    """
    from asr_lightning.text.vocab import make_tokenizer

    if model_name_or_path is not None:
        tokenizer, reason = _checkpoint_tokenizer(model_name_or_path)
        if tokenizer is not None and (vocab is None or _vocab_fits(tokenizer, vocab)):
            return tokenizer, True
        if vocab is None:
            raise ModelError(
                f"cannot load a tokenizer from {model_name_or_path}: {reason}\n"
                "Check the hub id or folder (and HF_HUB_OFFLINE); a checkpoint without a "
                "tokenizer (e.g. facebook/wav2vec2-base) needs the data's vocabulary "
                "(model.vocab, linked from the datamodule) to train a new CTC head"
            )
    elif vocab is None:
        raise ConfigError(
            "a model built from scratch needs the data's vocabulary: pass vocab "
            "(linked from the datamodule) or give model_name_or_path"
        )
    blank_id(vocab)
    return make_tokenizer(vocab), False


def load_feature_extractor(model_name_or_path: str) -> Any:
    """The feature extractor saved with a pretrained model (hub id or local folder)."""
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load the feature extractor of {model_name_or_path}: {err}\nGive a hub id "
            "or a folder written by save_pretrained / CTCModule.save_hf"
        ) from err


def build_processor(
    model_name_or_path: str | None,
    model_type: str | None = None,
    vocab: Mapping[str, int] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Feature extractor and tokenizer for a model, without loading its weights.

    Args:
        model_name_or_path: hub id or local folder of a pretrained model; ``None`` to build one
            from scratch.
        model_type: architecture built from scratch (ignored for a pretrained model).
        vocab: the data's vocabulary; required from scratch, optional when pretrained (a
            vocabulary that disagrees with the checkpoint's tokenizer replaces it).
        config_overrides: architecture overrides from scratch (e.g. ``num_mel_bins`` decides
            the filter-bank size of Parakeet's feature extractor).

    Returns:
        ``(feature_extractor, tokenizer)``.
    """
    if model_name_or_path is None and model_type is None:
        raise ConfigError("give model_name_or_path (pretrained) or model_type (from scratch)")
    tokenizer, _ = resolve_tokenizer(model_name_or_path, vocab)
    if model_name_or_path is not None:
        return load_feature_extractor(model_name_or_path), tokenizer
    config = build_config(model_type, tokenizer.get_vocab(), config_overrides)
    return scratch_feature_extractor(config), tokenizer


def head_module(model: Any) -> Any:
    """The CTC output layer (``lm_head`` for the wav2vec2 family, ``ctc_head`` for Parakeet)."""
    for name in HEAD_NAMES:
        if hasattr(model, name):
            return getattr(model, name)
    raise ModelError(f"{type(model).__name__} has none of the CTC heads {HEAD_NAMES}")


def load_pretrained(
    model_name_or_path: str, tokenizer: Any, new_head: bool, overrides: Mapping[str, Any]
) -> Any:
    """A pretrained ``*ForCTC`` model, with a fresh head sized for ``tokenizer`` if asked.

    Args:
        model_name_or_path: hub id or local folder.
        tokenizer: the tokenizer training will use.
        new_head: replace the checkpoint's CTC head (its vocabulary differs from the data's).
        overrides: configuration settings to change (dropout, masking, ...).
    """
    from transformers import AutoConfig, AutoModelForCTC

    try:
        config = AutoConfig.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load the configuration of {model_name_or_path}: {err}\nCheck the hub id "
            "or folder, or set HF_HUB_OFFLINE=0 / log in for gated models"
        ) from err
    settings = dict(overrides)
    if new_head:
        vocab = tokenizer.get_vocab()
        settings |= {"vocab_size": vocab_size(vocab), "pad_token_id": tokenizer.pad_token_id}
    config = with_overrides(config, settings)
    model = AutoModelForCTC.from_pretrained(
        model_name_or_path, config=config, ignore_mismatched_sizes=new_head
    )
    if new_head:
        head_module(model).reset_parameters()  # same size as before still means new meanings
        log.warning(
            "new CTC head for the data's vocabulary (%d tokens) on top of %s",
            config.vocab_size,
            model_name_or_path,
        )
    return model
