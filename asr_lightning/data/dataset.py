"""Map-style dataset: one utterance in, one decoded, augmented, labelled example out.

A bad item never raises inside a DataLoader worker: it comes back as :class:`Skipped` with its
reason, the collator moves it to ``batch["skipped"]`` and the module counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from asr_lightning.audio.augment import Augmenter, normalize_level
from asr_lightning.audio.decode import DEFAULT_BACKENDS, SAMPLE_RATE, Backend, load_audio
from asr_lightning.data.audio_cache import DecodedAudio
from asr_lightning.data.records import Item
from asr_lightning.data.table import as_table
from asr_lightning.errors import AsrLightningError

log = logging.getLogger(__name__)

LevelMode = Literal["none", "peak", "rms"]


@dataclass
class Example:
    """A decoded utterance ready for collation."""

    id: str
    audio: np.ndarray  # (n,) float32 mono at 16 kHz
    labels: list[int]
    text: str  # normalized reference
    speaker: str | None = None
    audio_path: str | None = None  # the file it was decoded from, if any (evaluation reports)
    seed: tuple[int, ...] | None = None  # (data seed, epoch, index): its random draws this epoch


@dataclass
class Skipped:
    """An utterance that could not be used, with the reason it is counted under."""

    id: str
    reason: str
    text: str = ""  # its normalized reference, so that an evaluation can still score it
    speaker: str | None = None
    audio_path: str | None = None
    duration: float | None = None  # seconds, when known


def audio_path(audio: str | bytes) -> str | None:
    """The path of an item's audio, ``None`` for embedded bytes."""
    return audio if isinstance(audio, str) else None


def skipped_item(item: Item, reason: str) -> Skipped:
    """:class:`Skipped` for ``item``, with what an evaluation report shows of it."""
    duration = item.duration if item.duration > 0 else None  # 0: setup could not measure it
    return Skipped(item.id, reason, item.text, item.speaker, audio_path(item.audio), duration)


class ASRDataset(Dataset):
    """Decodes audio on access; indices may be ``int`` or ``(index, epoch)`` pairs.

    The epoch travels with the index (see :class:`EpochTaggedSampler`) so augmentation draws from
    ``default_rng([seed, epoch, index])``: reproducible whatever the number of workers, and
    different every epoch even with persistent workers.

    With ``cache_audio=True`` every item is decoded once, when the dataset is created (in the
    main process, before DataLoader workers fork), into one shared buffer
    (:class:`~asr_lightning.data.audio_cache.DecodedAudio`); items are then sliced from it, and
    level normalization and augmentation still run per item and epoch. Undecodable items are
    still returned as :class:`Skipped`, with the same reason, every epoch.
    """

    def __init__(
        self,
        items: Sequence[Item],
        label_encoder: Callable[[str], list[int]],
        *,
        sample_rate: int = SAMPLE_RATE,
        backends: Sequence[Backend] = DEFAULT_BACKENDS,
        augmenter: Augmenter | None = None,
        level: LevelMode = "none",
        seed: int = 0,
        cache_audio: bool = False,
    ) -> None:
        self.items = as_table(items)  # columns: forked workers share them (no copy-on-read)
        self.label_encoder = label_encoder
        self.sample_rate = sample_rate
        self.backends = tuple(backends)
        self.augmenter = augmenter
        self.level = level
        self.seed = seed
        self.cache: DecodedAudio | None = None
        if cache_audio:
            self.cache = DecodedAudio.build(
                len(self.items), self._decode_reason, sample_rate=sample_rate
            )

    def __len__(self) -> int:
        return len(self.items)

    @property
    def durations(self) -> np.ndarray:
        return self.items.durations

    def _decode(self, item: Item) -> np.ndarray | Skipped:
        """Decoded samples of ``item``, or :class:`Skipped` with the reason."""
        try:
            return load_audio(item.audio, self.sample_rate, self.backends)
        except AsrLightningError as err:
            reason = getattr(err, "reason", str(err).splitlines()[0])
            log.debug("skipping %s: %s", item.id, reason)
            return skipped_item(item, f"decode failed: {reason}")
        except Exception as err:  # a worker must never die on one file
            log.warning("skipping %s: unexpected %s: %s", item.id, type(err).__name__, err)
            return skipped_item(item, f"decode failed: {type(err).__name__}")

    def _decode_reason(self, index: int) -> np.ndarray | str:
        item = self.items[index]
        if item.unreadable is not None:
            return item.unreadable
        decoded = self._decode(item)
        return decoded.reason if isinstance(decoded, Skipped) else decoded

    def __getitem__(self, key: int | tuple[int, int]) -> Example | Skipped:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.items[index]
        if item.unreadable is not None:
            return skipped_item(item, item.unreadable)
        if self.cache is not None:
            cached = self.cache.get(index)
            audio = skipped_item(item, cached) if isinstance(cached, str) else cached
        else:
            audio = self._decode(item)
        if isinstance(audio, Skipped):
            return audio
        # level first, so the augmenter's random gain still varies the level the model sees
        if self.level != "none":
            audio = normalize_level(audio, self.level)
        seed = (self.seed, epoch, index)
        if self.augmenter is not None:
            audio = self.augmenter(audio, np.random.default_rng(seed))
        labels = self.label_encoder(item.text)
        path = audio_path(item.audio)
        return Example(item.id, audio, labels, item.text, item.speaker, path, seed)
