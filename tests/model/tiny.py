"""Tiny randomly initialised CTC models and the collator's batches, for fast model tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from asr_lightning.data.collate import CTCCollator
from asr_lightning.model.module import CTCModule
from asr_lightning.text.vocab import LabelEncoder, build_vocab

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
    return CTCCollator(module.feature_extractor)(items)


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
