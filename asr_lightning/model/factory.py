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

import contextlib
import dataclasses
import difflib
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from asr_lightning.audio.decode import SAMPLE_RATE
from asr_lightning.errors import ConfigError, ModelError, VocabularyError
from asr_lightning.model.ctc import uses_attention_mask
from asr_lightning.model.families import (
    HEAD_NAMES,
    ctc_model_types,
    head_module,
    head_settings,
)
from asr_lightning.model.padding import guard_padding

log = logging.getLogger(__name__)

#: Architectures :func:`build_config` can create from scratch (Hugging Face ``model_type``).
ScratchModelType = Literal[
    "wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "parakeet_ctc"
]
#: Head size of the weightless model that measures a frame rate, for configs that set none.
PROBE_VOCAB_SIZE = 32
#: SpecAugment settings passed to the model configuration (wav2vec2 family only).
MASKING_OPTIONS = ("mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length")
#: Token used as CTC blank and padding in every vocabulary built from data.
BLANK_TOKEN = "<pad>"


def _field_names(config_class: type) -> set[str]:
    if dataclasses.is_dataclass(config_class):
        return {field.name for field in dataclasses.fields(config_class)}
    return set(vars(config_class()))  # transformers < 5: plain attributes


def _derived_names(config_class: type) -> set[str]:
    if not dataclasses.is_dataclass(config_class):
        return set()
    return set(vars(config_class())) - _field_names(config_class)


def _sub_config_names(config: Any) -> list[str]:
    """Sub-configurations holding the encoder's settings (Parakeet and LASR's ``encoder_config``,
    OmniASR's ``audio_config``)."""
    names = getattr(type(config), "sub_configs", None) or {}
    return [name for name in names if getattr(config, name, None) is not None]


def with_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of ``config`` with ``overrides`` applied, derived values recomputed.

    Keys of a composite config's encoder (``hidden_size`` for Parakeet, OmniASR) may be given
    flat; they are routed to the sub-configuration that has them (``encoder_config``,
    ``audio_config``). A key both levels have (Granite's ``vocab_size``) is set on both.

    Args:
        config: a ``PretrainedConfig``.
        overrides: attribute names and values, e.g. ``{"hidden_size": 256, "layerdrop": 0.0}``.

    Raises:
        ConfigError: a key is not an option of this architecture.
    """
    config_class = type(config)
    subs = _sub_config_names(config)
    top_fields = _field_names(config_class) - set(subs)
    # Values the class derives from its fields (wav2vec2's num_feat_extract_layers) are left out
    # so that they are derived again from the overridden fields.
    derived = _derived_names(config_class)
    values = {key: value for key, value in config.to_dict().items() if key not in derived}
    sub_values, sub_fields = {}, {}
    for name in subs:
        sub_class = type(getattr(config, name))
        sub_fields[name] = _field_names(sub_class)
        sub_derived = _derived_names(sub_class)
        sub_values[name] = {
            key: value for key, value in (values.get(name) or {}).items() if key not in sub_derived
        }
    for key, value in overrides.items():
        owners = [name for name in subs if key in sub_fields[name]]
        for owner in owners:  # Granite's vocab_size is the encoder's too, and must agree
            sub_values[owner][key] = value
        if key in top_fields:
            values[key] = value
        elif not owners:
            known = sorted(top_fields.union(*sub_fields.values()))
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            if key in MASKING_OPTIONS:  # in-model masking is the wav2vec2 family's
                hint = (
                    " This model masks no hidden states; for a filter-bank model, mask its "
                    "features with data.spec_augment (time and frequency masks) instead."
                )
            raise ConfigError(
                f"{key!r} is not an option of {config.model_type!r} models "
                f"({config_class.__name__}).{hint} Remove it from the model settings."
            )
    values.update(sub_values)
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
    head = head_settings(default, vocab_size(vocab), blank_id(vocab))
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


def checkpoint_tokenizer(model_name_or_path: str) -> tuple[Any | None, str]:
    """The checkpoint's tokenizer, or None and why it could not be loaded.

    Pretrained encoders usually ship none (``facebook/wav2vec2-base``, XLS-R, HuBERT, WavLM,
    w2v-BERT 2.0 hold a config, weights and a feature extractor only).
    """
    from transformers import AutoTokenizer

    from asr_lightning.text.vocab import vocab_characters

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    except (OSError, ValueError, TypeError, KeyError) as err:
        log.debug("no usable tokenizer in %s (%s)", model_name_or_path, err)
        return None, "no tokenizer files"
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    if not vocab_characters(tokenizer.get_vocab(), delimiter, tokenizer.all_special_tokens):
        # LASR's tokenizer class builds itself from nothing: special tokens, no text
        return None, "its tokenizer spells no characters (a default built without files)"
    return tokenizer, ""


def _vocab_fits(tokenizer: Any, vocab: Mapping[str, int]) -> bool:
    """Whether every token of ``vocab`` has the same id in ``tokenizer``."""
    known = tokenizer.get_vocab()
    return all(known.get(token) == index for token, index in vocab.items())


def resolve_tokenizer(
    model_name_or_path: str | None,
    vocab: Mapping[str, int] | None,
    tokenizer_json: str | None = None,
) -> tuple[Any, bool]:
    """The tokenizer to train with, and whether it is the checkpoint's own.

    A checkpoint's tokenizer is kept when no vocabulary is given or when the given one agrees
    with it; otherwise the tokenizer is built from ``vocab`` (and the model needs a new head):
    a character tokenizer, or the subword tokenizer ``tokenizer_json`` whose vocabulary it is.
    """
    from asr_lightning.text.vocab import make_tokenizer

    if model_name_or_path is not None:
        tokenizer, reason = checkpoint_tokenizer(model_name_or_path)
        if tokenizer is not None and (vocab is None or _vocab_fits(tokenizer, vocab)):
            return tokenizer, True
        if vocab is None:
            raise ModelError(
                f"cannot load a tokenizer from {model_name_or_path}: {reason}\n"
                "Check the hub id or folder (and HF_HUB_OFFLINE). A checkpoint without a "
                "tokenizer (e.g. facebook/wav2vec2-base) is fine-tuned with a vocabulary built "
                "from the training transcripts: 'asr-lightning fit' builds it from data.train "
                "and links it to model.vocab; in Python, pass vocab=build_vocab(transcripts)"
            )
    elif vocab is None:
        raise ConfigError(
            "a model built from scratch needs the data's vocabulary: pass vocab "
            "(linked from the datamodule) or give model_name_or_path"
        )
    blank_id(vocab)
    if tokenizer_json is not None:
        return _subword_tokenizer(tokenizer_json, vocab), False
    return make_tokenizer(vocab), False


def _subword_tokenizer(tokenizer_json: str, vocab: Mapping[str, int]) -> Any:
    """The subword tokenizer of ``vocab`` (both linked from the datamodule)."""
    from asr_lightning.text.subword import make_subword_tokenizer

    tokenizer = make_subword_tokenizer(tokenizer_json)
    if tokenizer.get_vocab() != dict(vocab):
        raise VocabularyError(
            "model.vocab is not the vocabulary of model.tokenizer_json; link both from the "
            "datamodule (asr-lightning fit does) or leave tokenizer_json unset for characters"
        )
    return tokenizer


def load_feature_extractor(model_name_or_path: str) -> Any:
    """The feature extractor saved with a pretrained model (hub id or local folder)."""
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(model_name_or_path)
    except ImportError as err:  # Granite Speech 5's extractor needs torchaudio
        raise ModelError(
            f"the feature extractor of {model_name_or_path} ({_family(model_name_or_path)} "
            "models) cannot run here: "
            f"{' '.join(str(err).split())} asr-lightning needs no torchaudio otherwise; a "
            "torchaudio release must match the installed torch exactly (see the README, "
            "'Why torchaudio is optional'), or choose a model of another family."
        ) from err
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load the feature extractor of {model_name_or_path}: {err}\nGive a hub id "
            "or a folder written by save_pretrained / CTCModule.save_hf"
        ) from err


def _family(model_name_or_path: str) -> str:
    """The model type a checkpoint's configuration names, for error messages."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_name_or_path).model_type
    except (OSError, ValueError):
        return "unknown"


def build_processor(
    model_name_or_path: str | None,
    model_type: str | None = None,
    vocab: Mapping[str, int] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    tokenizer_json: str | None = None,
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
        tokenizer_json: the subword tokenizer ``vocab`` belongs to; ``None`` for characters.

    Returns:
        ``(feature_extractor, tokenizer)``.
    """
    if model_name_or_path is None and model_type is None:
        raise ConfigError("give model_name_or_path (pretrained) or model_type (from scratch)")
    tokenizer, _ = resolve_tokenizer(model_name_or_path, vocab, tokenizer_json)
    if model_name_or_path is not None:
        return load_feature_extractor(model_name_or_path), tokenizer
    config = build_config(model_type, tokenizer.get_vocab(), config_overrides)
    return scratch_feature_extractor(config), tokenizer


def load_pretrained(
    model_name_or_path: str, tokenizer: Any, new_head: bool, overrides: Mapping[str, Any]
) -> Any:
    """A pretrained ``*ForCTC`` model, with a fresh head sized for ``tokenizer`` if asked.

    The checkpoint may hold a whole CTC model or only its encoder (``Wav2Vec2Model`` weights,
    no ``lm_head``): the encoder's weights are kept either way, and a new head starts from
    PyTorch's default initialization.

    Args:
        model_name_or_path: hub id or local folder.
        tokenizer: the tokenizer training will use.
        new_head: replace the checkpoint's CTC head (its vocabulary differs from the data's, or
            it has none).
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
    if config.model_type not in ctc_model_types():
        raise ModelError(
            f"{model_name_or_path} is a {config.model_type!r} model, which has no CTC head in "
            f"transformers; CTC families: {', '.join(ctc_model_types())}"
        )
    settings = dict(overrides)
    if new_head:
        vocab = tokenizer.get_vocab()
        settings |= head_settings(config, vocab_size(vocab), tokenizer.pad_token_id)
    config = with_overrides(config, settings)
    with _quiet_load_report():
        model, info = AutoModelForCTC.from_pretrained(
            model_name_or_path,
            config=config,
            ignore_mismatched_sizes=new_head,
            output_loading_info=True,
        )
    head = _report_loading(model, info, model_name_or_path)
    if new_head or head:
        head_module(model).reset_parameters()  # same size as before still means new meanings
        log.warning(
            "new CTC head for the data's vocabulary (%d tokens) on top of %s",
            config.vocab_size,
            model_name_or_path,
        )
    guard_padding(model)
    return model


#: Parameters a checkpoint may lack without harm: wav2vec2's SpecAugment mask embedding exists
#: only when masking is on, and a checkpoint saved without masking has none.
OPTIONAL_WEIGHTS = ("masked_spec_embed",)


def _report_loading(model: Any, info: Mapping[str, Any], source: str) -> bool:
    """Say which weights did not come from the checkpoint; True when the CTC head is among them.

    Replaces transformers' load report, which calls a missing head a problem although a new
    vocabulary needs exactly that, and lists a pretraining checkpoint's quantizer weights.
    """
    head_names = {name for name, _ in model.named_children() if name in HEAD_NAMES}

    def is_head(key: str) -> bool:
        return key.split(".")[0] in head_names

    missing = set(info.get("missing_keys") or ())
    mismatched = {
        str(item[0]) if isinstance(item, tuple) else str(item)
        for item in info.get("mismatched_keys") or ()
    }
    fresh = sorted(
        key
        for key in missing | mismatched
        if not is_head(key) and not key.endswith(OPTIONAL_WEIGHTS)
    )
    if fresh:
        log.warning(
            "%d encoder weights are not in %s and start from random values: %s",
            len(fresh),
            source,
            ", ".join(fresh[:10]) + (" ..." if len(fresh) > 10 else ""),
        )
    unused = info.get("unexpected_keys") or ()
    if unused:
        log.info(
            "%d weights of %s are not used by CTC fine-tuning (e.g. a pretraining quantizer): %s",
            len(unused),
            source,
            ", ".join(sorted(unused)[:5]),
        )
    return any(is_head(key) for key in missing | mismatched)


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """Silence transformers' load report while :func:`_report_loading` gives our own."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def model_settings(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration settings a ``CTCModule``'s hyperparameters ask of its model.

    ``config_overrides``, then SpecAugment and LayerDrop where set, and the CTC loss options;
    the one place both training and checkpoint loading read them from.
    """
    settings = dict(hparams.get("config_overrides") or {})
    for name in (*MASKING_OPTIONS, "layerdrop"):
        if hparams.get(name) is not None:
            settings[name] = hparams[name]
    for name in ("ctc_zero_infinity", "ctc_loss_reduction"):
        if name in hparams:
            settings[name] = hparams[name]
    return settings


def build_model(
    model_name_or_path: str | None,
    model_type: str | None,
    vocab: Mapping[str, int] | None,
    settings: Mapping[str, Any],
    tokenizer_json: str | None = None,
) -> tuple[Any, Any, Any]:
    """``(model, feature_extractor, tokenizer)``: pretrained, or new from ``model_type``.

    A pretrained checkpoint whose tokenizer does not fit ``vocab`` (or that has none) gets a
    new CTC head for it; a new model gets a head for ``vocab``. Either way the model is guarded
    against padding (:func:`asr_lightning.model.padding.guard_padding`). ``tokenizer_json`` is
    the subword tokenizer ``vocab`` belongs to (``None`` for a character vocabulary).
    """
    tokenizer, own_tokenizer = resolve_tokenizer(model_name_or_path, vocab, tokenizer_json)
    if model_name_or_path is not None:
        model = load_pretrained(model_name_or_path, tokenizer, not own_tokenizer, settings)
        return model, load_feature_extractor(model_name_or_path), tokenizer
    from transformers import AutoModelForCTC

    if model_type is None:
        raise ConfigError("give model_name_or_path (pretrained) or model_type (from scratch)")
    config = build_config(model_type, tokenizer.get_vocab(), settings)
    model = AutoModelForCTC.from_config(config)
    if model_type == "parakeet_ctc":
        reset_convolutions(model)
    guard_padding(model)
    return model, scratch_feature_extractor(config), tokenizer


def output_frames_per_second(
    model_name_or_path: str | None,
    model_type: str | None,
    config_overrides: Mapping[str, Any] | None,
    feature_extractor: Any,
) -> float:
    """CTC output frames per second of audio of a model, without its weights.

    The model is built on PyTorch's ``meta`` device (no memory, no weights loaded): its
    output-length arithmetic is all :func:`asr_lightning.model.features.samples_per_frame` needs.
    """
    import torch
    from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCTC

    from asr_lightning.model.features import samples_per_frame

    if model_name_or_path is not None:
        config = AutoConfig.from_pretrained(model_name_or_path)
    elif model_type is not None:
        config = CONFIG_MAPPING[model_type]()
    else:
        raise ConfigError("give model_name_or_path (pretrained) or model_type (from scratch)")
    settings = dict(config_overrides or {})
    if getattr(config, "vocab_size", 0) is None:  # w2v-BERT's config has no head size
        settings["vocab_size"] = PROBE_VOCAB_SIZE  # the frame rate does not depend on it
    config = with_overrides(config, settings)
    with torch.device("meta"):
        model = AutoModelForCTC.from_config(config)
    return SAMPLE_RATE / samples_per_frame(model, feature_extractor)
