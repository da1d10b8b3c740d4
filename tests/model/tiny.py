"""Tiny randomly initialised CTC models and the collator's batches, for fast model tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from asr_lightning.model.features import collator
from asr_lightning.text.vocab import LabelEncoder, build_vocab
from asr_lightning.training.module import CTCModule

TRANSCRIPTS = ["abc", "cab ba", "bad cab", "a"]
VOCAB = build_vocab(TRANSCRIPTS)

#: Layer-norm feature encoder: takes an attention mask, like wav2vec2-large-lv60.
WAV2VEC2 = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (32, 32),
    "conv_kernel": (10, 3),
    "conv_stride": (5, 2),
    "feat_extract_norm": "layer",
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
#: Group-norm feature encoder, like wav2vec2-base: must not be given an attention mask.
WAV2VEC2_GROUP_NORM = {**WAV2VEC2, "feat_extract_norm": "group"}
PARAKEET = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "subsampling_conv_channels": 8,
    "num_mel_bins": 16,  # a multiple of the subsampling factor 8
}
ARCHITECTURES = {"wav2vec2": WAV2VEC2, "parakeet_ctc": PARAKEET}


@dataclass
class Item:
    """What the collator reads from a dataset item (see ``asr_lightning.data.dataset``)."""

    id: str
    audio: np.ndarray
    labels: list[int]
    text: str


def scratch_module(model_type: str = "wav2vec2", seed: int = 0, **kwargs: Any) -> CTCModule:
    """A built tiny module from scratch (seeded, so two calls give the same weights)."""
    settings = {"config_overrides": ARCHITECTURES[model_type], "vocab": VOCAB, **kwargs}
    module = CTCModule(model_name_or_path=None, model_type=model_type, **settings)
    torch.manual_seed(seed)
    module.configure_model()
    return module


def clip(seconds: float, seed: int) -> np.ndarray:
    """Noise with a few tones: (n,) float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16_000)
    t = np.arange(n) / 16_000
    tones = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 2000, size=3))
    return (0.1 * tones + 0.05 * rng.standard_normal(n)).astype(np.float32)


def batch_of(module: CTCModule, durations: list[float], texts: list[str] | None = None) -> dict:
    """A collated batch of synthetic clips labelled with ``texts`` (default: TRANSCRIPTS)."""
    texts = texts or TRANSCRIPTS[: len(durations)]
    encode = LabelEncoder(module.tokenizer)
    items = [
        Item(f"utt{i}", clip(seconds, seed=i), encode(text), text)
        for i, (seconds, text) in enumerate(zip(durations, texts, strict=True))
    ]
    return collator(module.feature_extractor)(items)


def loader(*batches: dict) -> DataLoader:
    """A DataLoader yielding ready-made batches as they are."""
    return DataLoader(list(batches), batch_size=None)


def trainer(tmp_path, **kwargs: Any) -> lightning.Trainer:
    """A quiet CPU trainer writing under ``tmp_path``."""
    settings = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": tmp_path,
        **kwargs,
    }
    return lightning.Trainer(**settings)


# -- every CTC family of transformers, as a tiny pretrained folder ------------------------------

#: Sizes that make any family's encoder tiny, set wherever a configuration has the field.
TINY_SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "output_hidden_size": 32,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "subsampling_conv_channels": 8,
    "head_dim": 16,
    "context_size": 16,
}


def _shrink(config: Any, feat_extract_norm: str) -> None:
    for key, value in TINY_SIZES.items():
        if hasattr(config, key):
            setattr(config, key, value)
    if hasattr(config, "conv_dim"):  # keep the strides, so the frame rate stays the family's
        config.conv_dim = tuple(32 for _ in config.conv_dim)
    if hasattr(config, "feat_extract_norm"):
        config.feat_extract_norm = feat_extract_norm


def family_config(model_type: str, feat_extract_norm: str = "group") -> Any:
    """A tiny configuration of any ``AutoModelForCTC`` family, from its defaults.

    Args:
        model_type: a key of ``MODEL_FOR_CTC_MAPPING_NAMES``.
        feat_extract_norm: feature-encoder norm of wav2vec2-family models (``group``, as in
            wav2vec2-base, or ``layer``, as in XLS-R and the large models).
    """
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type]()
    if getattr(config, "vocab_size", 0) is None:  # w2v-BERT, conformer: encoder-only defaults
        config.vocab_size = 32
    _shrink(config, feat_extract_norm)
    for name in getattr(type(config), "sub_configs", None) or {}:
        sub = getattr(config, name, None)
        if sub is not None:
            _shrink(sub, feat_extract_norm)
    return config


def family_feature_extractor(model_type: str, config: Any) -> Any:
    """The feature extractor the family's released checkpoints ship (w2v-BERT: SeamlessM4T)."""
    import transformers
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

    from asr_lightning.model.ctc import uses_attention_mask

    if model_type == "wav2vec2-bert":
        return transformers.SeamlessM4TFeatureExtractor()
    name = FEATURE_EXTRACTOR_MAPPING_NAMES[model_type]
    if name == "Wav2Vec2FeatureExtractor":
        return transformers.Wav2Vec2FeatureExtractor(
            do_normalize=True, return_attention_mask=uses_attention_mask(config)
        )
    return getattr(transformers, name)()


def save_encoder_folder(model_type: str, path: Any, feat_extract_norm: str = "group") -> Any:
    """Save a tiny random model of ``model_type`` as a pretrained encoder checkpoint.

    The folder has what ``facebook/wav2vec2-base`` ships: ``config.json``, weights without a
    CTC head and a feature extractor, no tokenizer. Returns the model (with its head).
    """
    from pathlib import Path

    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCTC

    from asr_lightning.model.families import HEAD_NAMES

    config = family_config(model_type, feat_extract_norm)
    torch.manual_seed(0)
    model = AutoModelForCTC.from_config(config)
    folder = Path(path)
    model.save_pretrained(folder)
    weights = folder / "model.safetensors"
    tensors = load_file(weights)
    # (Granite Speech 5 saves no head: it is tied to the encoder's self-conditioning layer)
    encoder = {k: v for k, v in tensors.items() if k.split(".")[0] not in HEAD_NAMES}
    save_file(encoder, weights, metadata={"format": "pt"})
    try:
        family_feature_extractor(model_type, config).save_pretrained(folder)
    except ImportError:  # Granite Speech 5's extractor needs torchaudio: the test expects that
        (folder / "preprocessor_config.json").write_text(
            json.dumps({"feature_extractor_type": "GraniteSpeech5FeatureExtractor"}),
            encoding="utf-8",
        )
    return model
