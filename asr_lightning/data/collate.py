"""Turn a list of dataset items into one padded CTC batch.

The model's own feature extractor pads (and, for filter-bank models, computes features), once
per batch, in the DataLoader workers. Labels are padded with ``-100``, the value Hugging Face CTC
heads ignore. Items the dataset could not load (``Skipped``) are listed in ``batch["skipped"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from asr_lightning.errors import ConfigError

log = logging.getLogger(__name__)

#: Rate of the audio in dataset items (``asr_lightning.audio.decode.SAMPLE_RATE``).
SAMPLE_RATE = 16_000
#: Input name of raw-waveform models (their time axis is the last one).
WAVEFORM_INPUT = "input_values"
#: Label value the CTC loss of ``AutoModelForCTC`` ignores.
LABEL_PAD_ID = -100
#: Length of the silent clip run through the feature extractor once, to learn the feature shape
#: of an empty batch.
_PROBE_SAMPLES = SAMPLE_RATE


def _is_skipped(item: Any) -> bool:
    """``Skipped`` items carry a reason and no audio (duck-typed: see ``data/dataset.py``)."""
    return hasattr(item, "reason") and not hasattr(item, "audio")


class CTCCollator:
    """Collate ``Example``/``Skipped`` items into the batch dict the CTC module consumes.

    The batch holds, for ``B`` loaded items:

    - ``<model input>``: ``input_values`` float (B, T) of samples for raw-waveform models
      (wav2vec2 family; (B, 1, T) for OmniASR), or ``input_features`` float (B, T, F) for
      filter-bank models (Parakeet, w2v-BERT); the name is
      ``feature_extractor.model_input_names[0]``.
    - ``attention_mask``: long (B, T), 1 on real samples/frames. Always present: for waveform
      inputs it is built from the true lengths even when the extractor would not return one.
    - ``input_lengths``: long (B,), true length of each row in 16 kHz samples.
    - ``labels``: long (B, L), padded with -100.
    - ``ids``, ``texts``: lists of B strings; ``skipped``: list of ``(id, reason)``.

    When every item was skipped, the batch has ``B = 0`` rows and no time steps (input shape
    (0, 0), (0, 1, 0) or (0, 0, F)), and the training step should skip it.

    Args:
        feature_extractor: The model's Hugging Face feature extractor (``Wav2Vec2FeatureExtractor``,
            ``ParakeetFeatureExtractor``, ``SeamlessM4TFeatureExtractor``, ...).
        pad_to_multiple_of: Pad the extractor's time axis to a multiple of this (samples for
            waveform and Parakeet extractors, frames for SeamlessM4T); ``None`` keeps each
            extractor's default.
    """

    def __init__(self, feature_extractor: Any, pad_to_multiple_of: int | None = None) -> None:
        rate = getattr(feature_extractor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise ConfigError(
                f"the feature extractor expects {rate} Hz audio but items are {SAMPLE_RATE} Hz: "
                "use a 16 kHz model or resample its feature extractor's audio"
            )
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be >= 1 or None, got {pad_to_multiple_of}")
        self.feature_extractor = feature_extractor
        self.pad_to_multiple_of = pad_to_multiple_of
        self.model_input_name: str = feature_extractor.model_input_names[0]
        self._empty_shape: tuple[int, ...] | None = None  # input shape of a batch of 0 rows

    def _extract(self, audios: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {}
        if self.pad_to_multiple_of is not None:
            kwargs["pad_to_multiple_of"] = self.pad_to_multiple_of
        features = self.feature_extractor(
            list(audios),
            sampling_rate=SAMPLE_RATE,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
            **kwargs,
        )
        return dict(features)

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        examples, skipped = [], []
        for item in items:
            if _is_skipped(item):
                skipped.append((item.id, item.reason))
            elif len(item.audio) == 0:
                skipped.append((item.id, "empty audio"))
            else:
                examples.append(item)
        if not examples:
            return self._empty_batch(skipped)

        audios = [np.asarray(example.audio, dtype=np.float32) for example in examples]
        lengths = torch.tensor([audio.shape[0] for audio in audios], dtype=torch.long)  # (B,)
        features = self._extract(audios)
        inputs = features[self.model_input_name].to(torch.float32)  # (B, [1,] T) or (B, T, F)
        if self.model_input_name == WAVEFORM_INPUT:  # the mask follows the true sample counts
            mask = (torch.arange(inputs.shape[-1])[None, :] < lengths[:, None]).long()
        elif features.get("attention_mask") is not None:
            mask = features["attention_mask"].long()  # (B, T) over frames
        else:
            raise ConfigError(
                f"{type(self.feature_extractor).__name__} returned no attention_mask for "
                f"{self.model_input_name} of shape {tuple(inputs.shape)}: padded frames could not "
                "be told apart; use a feature extractor that supports return_attention_mask"
            )
        return {
            self.model_input_name: inputs,
            "attention_mask": mask,
            "input_lengths": lengths,
            "labels": _pad_labels([example.labels for example in examples]),
            "ids": [example.id for example in examples],
            "texts": [example.text for example in examples],
            "skipped": skipped,
        }

    def _empty_batch(self, skipped: list[tuple[str, str]]) -> dict[str, Any]:
        """A batch with zero rows, shaped like a real one (see the class docstring)."""
        if self._empty_shape is None:
            probe = self._extract([np.zeros(_PROBE_SAMPLES, dtype=np.float32)])
            shape = list(probe[self.model_input_name].shape)
            time = len(shape) - 1 if self.model_input_name == WAVEFORM_INPUT else 1
            shape[0] = shape[time] = 0
            self._empty_shape = tuple(shape)
        return {
            self.model_input_name: torch.zeros(self._empty_shape, dtype=torch.float32),
            "attention_mask": torch.zeros((0, 0), dtype=torch.long),
            "input_lengths": torch.zeros((0,), dtype=torch.long),
            "labels": torch.zeros((0, 0), dtype=torch.long),
            "ids": [],
            "texts": [],
            "skipped": skipped,
        }


def _pad_labels(labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """Label rows padded with ``LABEL_PAD_ID`` to the longest: long (B, L)."""
    longest = max((len(row) for row in labels), default=0)
    padded = torch.full((len(labels), longest), LABEL_PAD_ID, dtype=torch.long)
    for row, ids in enumerate(labels):
        if len(ids):
            padded[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return padded
