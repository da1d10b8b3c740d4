"""Streaming sources: corpora read once, in order, without knowing durations up front.

Bucketing by duration needs every duration in advance, which a stream cannot give. Instead a
buffer of ``buffer_size`` decoded utterances is sorted by duration and cut into batches under
the same cap as the bucket sampler, and the batches of one buffer are shuffled (lhotse's
dynamic bucketing, in its simplest form). Padding stays low when the buffer holds a few hundred
utterances; memory is bounded by the buffer.

Items are dealt round-robin to ``rank * num_workers + worker`` shards, so every process reads
the stream but decodes only its own share. Dropped items (decode failure, duration, empty
transcript, CTC-infeasible) travel in the batches as :class:`Skipped`, so the module counts them
like any other skipped item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from asr_lightning.audio.augment import Augmenter, normalize_level
from asr_lightning.audio.decode import DEFAULT_BACKENDS, SAMPLE_RATE, Backend, load_audio
from asr_lightning.data.bucketing import pack_by_seconds
from asr_lightning.data.dataset import Example, LevelMode, Skipped, audio_path
from asr_lightning.data.filters import FilterRules, decode_reason, verdict
from asr_lightning.data.sources import SourceConfig, iter_source
from asr_lightning.errors import AudioDecodeError, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Utterances decoded and sorted together before they are cut into batches.
DEFAULT_BUFFER_SIZE = 500


def buffered_batches(
    items: Iterable[tuple[T, float]],
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    max_batch_seconds: float | None = None,
    batch_size: int | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[list[T]]:
    """Batches of similar duration from a stream of ``(item, seconds)``.

    Args:
        items: The stream; each item with its duration in seconds.
        buffer_size: Items sorted together; larger buffers pad less and hold more memory.
        max_batch_seconds: Cap on padded seconds (rows x longest) per batch.
        batch_size: Fixed rows per batch instead of a seconds cap.
        rng: Shuffles the batches of each buffer; ``None`` keeps them sorted (evaluation).
    """
    if (max_batch_seconds is None) == (batch_size is None):
        raise ConfigError("set exactly one of max_batch_seconds or batch_size")
    if buffer_size < 1:
        raise ConfigError(f"buffer_size must be >= 1, got {buffer_size}")
    buffer: list[tuple[T, float]] = []
    for entry in items:
        buffer.append(entry)
        if len(buffer) >= buffer_size:
            yield from _cut(buffer, max_batch_seconds, batch_size, rng)
            buffer = []
    if buffer:
        yield from _cut(buffer, max_batch_seconds, batch_size, rng)


def _cut(
    buffer: list[tuple[T, float]],
    max_batch_seconds: float | None,
    batch_size: int | None,
    rng: np.random.Generator | None,
) -> Iterator[list[T]]:
    durations = np.array([seconds for _, seconds in buffer], dtype=np.float64)
    order = np.argsort(durations, kind="stable")
    if batch_size is not None:
        batches = [order[i : i + batch_size].tolist() for i in range(0, order.size, batch_size)]
    else:
        batches = pack_by_seconds(order, durations, max_batch_seconds)  # type: ignore[arg-type]
    sequence = rng.permutation(len(batches)) if rng is not None else range(len(batches))
    for i in sequence:
        yield [buffer[index][0] for index in batches[i]]


class StreamingASRDataset(IterableDataset):
    """Yields whole batches (lists of :class:`Example` / :class:`Skipped`) from a stream.

    Use with ``DataLoader(dataset, batch_size=None, collate_fn=CTCCollator(...))``.
    """

    def __init__(
        self,
        source: SourceConfig,
        normalizer: Callable[[str], str],
        label_encoder: Callable[[str], list[int]],
        rules: FilterRules,
        *,
        max_batch_seconds: float | None = None,
        batch_size: int | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        shuffle: bool = True,
        augmenter: Augmenter | None = None,
        level: LevelMode = "none",
        backends: Sequence[Backend] = DEFAULT_BACKENDS,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.source = source
        self.normalizer = normalizer
        self.label_encoder = label_encoder
        self.rules = rules
        self.max_batch_seconds = max_batch_seconds
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.shuffle = shuffle
        self.augmenter = augmenter
        self.level = level
        self.backends = tuple(backends)
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> tuple[int, int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.num_replicas * workers, self.rank * workers + worker

    def _examples(self, shards: int, shard: int) -> Iterator[tuple[Example | Skipped, float]]:
        for index, utt in enumerate(iter_source(self.source)):
            if index % shards != shard:
                continue
            path = audio_path(utt.audio)
            try:
                audio = load_audio(utt.audio, SAMPLE_RATE, self.backends)
            except AudioDecodeError as err:
                text = self.normalizer(utt.text)
                yield Skipped(utt.id, decode_reason(err), text, utt.speaker, path), 0.0
                continue
            seconds = audio.size / SAMPLE_RATE
            reason, text = verdict(utt, seconds, self.rules, self.normalizer, self.label_encoder)
            if reason is not None:
                yield Skipped(utt.id, reason), 0.0
                continue
            if self.level != "none":
                audio = normalize_level(audio, self.level)
            seed = (self.seed, self.epoch, index)
            if self.augmenter is not None:
                audio = self.augmenter(audio, np.random.default_rng(seed))
            labels = self.label_encoder(text)
            yield Example(utt.id, audio, labels, text, utt.speaker, path, seed), seconds

    def __iter__(self) -> Iterator[list[Example | Skipped]]:
        shards, shard = self._shard()
        rng = np.random.default_rng([self.seed, self.epoch, shard]) if self.shuffle else None
        yield from buffered_batches(
            self._examples(shards, shard),
            buffer_size=self.buffer_size,
            max_batch_seconds=self.max_batch_seconds,
            batch_size=self.batch_size,
            rng=rng,
        )
