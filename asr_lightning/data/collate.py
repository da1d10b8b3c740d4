"""Turn a list of dataset items into one padded CTC batch.

The model's feature function (the one every inference runtime runs) pads the audio, or computes
and pads its features, once per batch, in the DataLoader workers. Labels are padded with
``-100``, the value Hugging Face CTC heads ignore. Items the dataset could not load
(``Skipped``) are listed in ``batch["skipped"]``, with their transcripts. Every item also
brings what an evaluation report shows of it (:func:`details`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from asr_lightning.data.spec_augment import (
    SpecAugmentOptions,
    check_filter_bank,
    mask_generator,
    spec_augment,
)

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


def details(item: Any) -> dict[str, Any]:
    """``{"duration_s", "speaker", "audio"}`` of an ``Example`` or ``Skipped`` item: seconds of
    its decoded audio (a skipped item's known duration, else ``None``), its speaker and its audio
    file, each ``None`` when unknown; the per-utterance records carry them."""
    if _is_skipped(item):
        duration = getattr(item, "duration", None)
    else:
        duration = round(len(item.audio) / SAMPLE_RATE, 3)
    return {
        "duration_s": duration,
        "speaker": getattr(item, "speaker", None),
        "audio": getattr(item, "audio_path", None),
    }


#: ``audios -> {"inputs": (B, [1,] T) or (B, T, F) array, "attention_mask": (B, T) array}``: the
#: one feature extraction every runtime shares (``asr_lightning.model.features.feature_function``).
FeatureFunction = Callable[[Sequence[np.ndarray]], Mapping[str, np.ndarray]]


class CTCCollator:
    """Collate ``Example``/``Skipped`` items into the batch dict the CTC module consumes.

    The batch holds, for ``B`` loaded items:

    - ``<model input>``: ``input_values`` float (B, T) of samples for raw-waveform models
      (wav2vec2 family; (B, 1, T) for OmniASR), or ``input_features`` float (B, T, F) for
      filter-bank models (Parakeet, w2v-BERT).
    - ``attention_mask``: long (B, T), 1 on real samples/frames.
    - ``input_lengths``: long (B,), true length of each row in 16 kHz samples.
    - ``labels``: long (B, L), padded with -100.
    - ``ids``, ``texts``: lists of B strings; ``skipped``: list of ``(id, reason)``;
      ``skipped_texts``: the transcript of each skipped item (``""`` when unknown), so that an
      evaluation can score an unreadable utterance instead of dropping it.
    - ``details``, ``skipped_details``: :func:`details` of each of the B items and of each
      skipped item.

    When every item was skipped, the batch has ``B = 0`` rows and no time steps (input shape
    (0, 0), (0, 1, 0) or (0, 0, F)), and the training step should skip it.

    Args:
        featurize: The model's feature function (the same one inference runs), in DataLoader
            workers once per batch.
        model_input_name: The model's input keyword (``input_values`` or ``input_features``).
        spec_augment: Time and frequency masks on the features of filter-bank models, for the
            training collator only (:mod:`asr_lightning.data.spec_augment`); each item is
            masked with the generator of its ``seed``.
    """

    def __init__(
        self,
        featurize: FeatureFunction,
        model_input_name: str,
        spec_augment: SpecAugmentOptions | None = None,
    ) -> None:
        if spec_augment is not None:
            check_filter_bank(model_input_name)
        self.featurize = featurize
        self.model_input_name = model_input_name
        self.spec_augment = spec_augment
        self._empty_shape: tuple[int, ...] | None = None  # input shape of a batch of 0 rows

    def _extract(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.featurize(list(audios))
        inputs = torch.as_tensor(np.asarray(features["inputs"]), dtype=torch.float32)
        return inputs, torch.as_tensor(np.asarray(features["attention_mask"])).long()

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        examples, skipped, skipped_texts, skipped_details = [], [], [], []
        for item in items:
            if _is_skipped(item):
                skipped.append((item.id, item.reason))
                skipped_texts.append(getattr(item, "text", "") or "")
            elif len(item.audio) == 0:
                skipped.append((item.id, "empty audio"))
                skipped_texts.append(item.text)
            else:
                examples.append(item)
                continue
            skipped_details.append(details(item))
        if not examples:
            return self._empty_batch(skipped, skipped_texts, skipped_details)

        audios = [np.asarray(example.audio, dtype=np.float32) for example in examples]
        lengths = torch.tensor([audio.shape[0] for audio in audios], dtype=torch.long)  # (B,)
        inputs, mask = self._extract(audios)  # (B, [1,] T) or (B, T, F); (B, T)
        if self.spec_augment is not None:
            inputs = self._mask(inputs, mask, examples)
        return {
            self.model_input_name: inputs,
            "attention_mask": mask,
            "input_lengths": lengths,
            "labels": _pad_labels([example.labels for example in examples]),
            "ids": [example.id for example in examples],
            "texts": [example.text for example in examples],
            "skipped": skipped,
            "skipped_texts": skipped_texts,
            "details": [details(example) for example in examples],
            "skipped_details": skipped_details,
        }

    def _mask(
        self, inputs: torch.Tensor, mask: torch.Tensor, examples: Sequence[Any]
    ) -> torch.Tensor:
        """``inputs`` with each row's SpecAugment masks, drawn from its item's seed."""
        if any(getattr(example, "seed", None) is None for example in examples):
            raise ValueError(
                "spec_augment draws each item's masks from its seed (data seed, epoch, index), "
                "and these items have none: ASRDataset and StreamingASRDataset give it"
            )
        rngs = [mask_generator(example.seed) for example in examples]
        masked = spec_augment(inputs.numpy(), mask.sum(dim=1).numpy(), rngs, self.spec_augment)
        return torch.from_numpy(masked)

    def _empty_batch(
        self,
        skipped: list[tuple[str, str]],
        texts: list[str],
        skipped_details: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """A batch with zero rows, shaped like a real one (see the class docstring)."""
        if self._empty_shape is None:
            probe, _ = self._extract([np.zeros(_PROBE_SAMPLES, dtype=np.float32)])
            shape = list(probe.shape)
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
            "skipped_texts": texts,
            "details": [],
            "skipped_details": skipped_details,
        }


def _pad_labels(labels: Sequence[Sequence[int]]) -> torch.Tensor:
    """Label rows padded with ``LABEL_PAD_ID`` to the longest: long (B, L)."""
    longest = max((len(row) for row in labels), default=0)
    padded = torch.full((len(labels), longest), LABEL_PAD_ID, dtype=torch.long)
    for row, ids in enumerate(labels):
        if len(ids):
            padded[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return padded
