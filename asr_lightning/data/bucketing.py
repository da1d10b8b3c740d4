"""Duration-bucketed batches: little padding, every item once per epoch, DDP-safe, resumable.

Batching utterances of random lengths pads every row to the longest one; on a corpus of short
and long utterances that wastes about half of the frames. Here utterances are split into buckets
of equal counts by duration, sorted by duration inside each bucket and packed into batches of
similar lengths, and only then is the order of the batches shuffled.

The maths is free functions (:func:`bucket_boundaries`, :func:`make_batches`,
:func:`padding_fraction`, :func:`split_for_replicas`), testable alone;
:class:`DurationBucketSampler` is the stateful shell a ``DataLoader`` uses as ``batch_sampler``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from asr_lightning.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_NUM_BUCKETS = 8
#: When shuffling, each sort key is ``duration * exp(SORT_JITTER * u)`` with ``u ~ U(0, 1)``:
#: utterances within about 2 % of each other change places, so batches are made of different
#: utterances every epoch, for about 1 % more padding than a strict sort.
SORT_JITTER = 0.02

Batches = list[list[int]]


# ------------------------------------------------------------------------------ pure functions
def _as_durations(durations: Sequence[float] | np.ndarray) -> np.ndarray:
    """Durations as a float64 vector, or a ConfigError naming the first bad one."""
    try:
        values = np.asarray(durations, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"durations must be numbers of seconds: {err}") from err
    if values.ndim != 1:
        raise ConfigError(f"durations must be a flat sequence of seconds, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        first = int(bad[0])
        raise ConfigError(
            f"durations must be finite and >= 0 seconds: item {first} has {values[first]!r} "
            f"({bad.size} bad in all); fix or drop those utterances before batching"
        )
    return values


def _check_batching(
    max_batch_seconds: float | None, batch_size: int | None, num_buckets: int
) -> None:
    if (max_batch_seconds is None) == (batch_size is None):
        raise ConfigError(
            "set exactly one of max_batch_seconds (cap on padded seconds per batch) or "
            f"batch_size (utterances per batch); got max_batch_seconds={max_batch_seconds!r}, "
            f"batch_size={batch_size!r}"
        )
    if max_batch_seconds is not None and not (
        max_batch_seconds > 0 and math.isfinite(max_batch_seconds)
    ):
        raise ConfigError(f"max_batch_seconds must be > 0, got {max_batch_seconds!r}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    if num_buckets < 1:
        raise ConfigError(f"num_buckets must be >= 1, got {num_buckets!r}")


def _bucket_starts(count: int, num_buckets: int) -> list[int]:
    """Positions in the sorted order where each bucket starts, plus ``count`` at the end."""
    return [(i * count) // num_buckets for i in range(num_buckets + 1)]


def bucket_boundaries(
    durations: Sequence[float] | np.ndarray, num_buckets: int = DEFAULT_NUM_BUCKETS
) -> list[float]:
    """Duration quantiles that split ``durations`` into buckets holding equal counts.

    Args:
        durations: Seconds per utterance.
        num_buckets: Number of buckets.

    Returns:
        The ``num_buckets - 1`` inner edges, ascending: bucket ``i`` holds the durations ``d``
        with ``edges[i - 1] <= d < edges[i]``. With distinct durations the bucket counts differ
        by at most one; tied durations may make neighbouring edges equal.
    """
    values = np.sort(_as_durations(durations))
    _check_batching(None, 1, num_buckets)
    if values.size == 0:
        return []
    starts = _bucket_starts(values.size, num_buckets)[1:-1]
    return [float(values[min(start, values.size - 1)]) for start in starts]


def pack_by_seconds(order: np.ndarray, durations: np.ndarray, cap: float) -> Batches:
    """Greedy packing in ``order``: a batch grows while ``rows * longest <= cap``."""
    batches: Batches = []
    current: list[int] = []
    longest = 0.0
    for index in order.tolist():
        duration = durations[index]
        grown = max(longest, duration)
        if current and (len(current) + 1) * grown > cap:
            batches.append(current)
            current, grown = [], duration
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches


def make_batches(
    durations: Sequence[float] | np.ndarray,
    *,
    max_batch_seconds: float | None = None,
    batch_size: int | None = None,
    num_buckets: int = DEFAULT_NUM_BUCKETS,
    shuffle: bool = True,
    rng: np.random.Generator | int | Sequence[int] = 0,
    sort_jitter: float = SORT_JITTER,
) -> Batches:
    """Group utterance indices into batches of similar durations.

    Args:
        durations: Seconds per utterance; batch items are indices into it.
        max_batch_seconds: Cap on the padded seconds of a batch, ``len(batch) * max(duration)``,
            which is what a batch costs in compute and memory. An utterance longer than the cap
            gets a batch of its own (it is never dropped).
        batch_size: Fixed number of utterances per batch instead (the last batch of each bucket
            may be smaller). Exactly one of ``max_batch_seconds`` and ``batch_size`` is set.
        num_buckets: Number of equal-count duration buckets; batches never straddle two.
        shuffle: Randomize which near-equal utterances share a batch and the order of batches.
            Without it batches come shortest first, the same every time.
        rng: Generator or seed of the randomness (``numpy.random.default_rng`` accepts both).
        sort_jitter: Log-scale jitter of the sort key when shuffling (see ``SORT_JITTER``).

    Returns:
        Batches of indices; every index appears exactly once.
    """
    values = _as_durations(durations)
    _check_batching(max_batch_seconds, batch_size, num_buckets)
    generator = np.random.default_rng(rng)
    keys = values
    if shuffle and values.size:
        keys = values * np.exp(sort_jitter * generator.random(values.size))
    order = np.argsort(keys, kind="stable")  # shortest first; ties keep index order
    starts = _bucket_starts(values.size, num_buckets)
    batches: Batches = []
    for low, high in zip(starts[:-1], starts[1:], strict=True):
        bucket = order[low:high]
        if max_batch_seconds is not None:
            batches += pack_by_seconds(bucket, values, max_batch_seconds)
        else:
            step = int(batch_size)  # type: ignore[arg-type]  # checked above
            batches += [bucket[i : i + step].tolist() for i in range(0, bucket.size, step)]
    if shuffle:
        batches = [batches[i] for i in generator.permutation(len(batches))]
    return batches


def padding_fraction(
    batches: Sequence[Sequence[int]], durations: Sequence[float] | np.ndarray
) -> float:
    """Share of padded audio that is padding: ``1 - sum(d) / sum(len(b) * max(d in b))``.

    Args:
        batches: Batches of indices into ``durations``.
        durations: Seconds per utterance.

    Returns:
        A fraction in ``[0, 1)``; 0.0 when there is no audio at all.
    """
    values = np.asarray(durations, dtype=np.float64)
    real = padded = 0.0
    for batch in batches:
        if len(batch):
            seconds = values[np.asarray(batch, dtype=np.int64)]
            real += float(seconds.sum())
            padded += len(batch) * float(seconds.max())
    return 0.0 if padded == 0 else 1.0 - real / padded


def split_for_replicas(batches: Batches, num_replicas: int, *, drop_last: bool = False) -> Batches:
    """Make the number of batches a multiple of ``num_replicas`` without repeating any item.

    Args:
        batches: The global batch list, in order.
        num_replicas: Number of processes that each take ``batches[rank::num_replicas]``.
        drop_last: Drop the last ``len(batches) % num_replicas`` batches (their items are not
            seen this epoch) instead of splitting the largest batches in two.

    Returns:
        A new list; a split batch is replaced in place by its two halves (batches are packed
        shortest first, so its shorter and its longer half).

    Raises:
        ConfigError: when no batch has two items left to split (fewer items than replicas).
    """
    batches = [list(batch) for batch in batches]
    remainder = len(batches) % num_replicas
    if remainder == 0:
        return batches
    if drop_last:
        return batches[: len(batches) - remainder]
    for _ in range(num_replicas - remainder):
        position = max(range(len(batches)), key=lambda j: len(batches[j]))
        largest = batches[position]
        if len(largest) < 2:
            items = sum(len(batch) for batch in batches)
            raise ConfigError(
                f"cannot give {num_replicas} replicas the same number of batches without "
                f"repeating an utterance: only {items} utterance(s) in {len(batches)} "
                "single-item batch(es); use drop_last=True, more data, fewer devices, or a larger "
                "batch_size / max_batch_seconds"
            )
        half = len(largest) // 2
        batches[position : position + 1] = [largest[:half], largest[half:]]
    return batches


# ------------------------------------------------------------------------------ sampler
def _default_world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ConfigError(
            f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=}, {rank=}"
        )
    return num_replicas, rank


class DurationBucketSampler(Sampler[list[int]]):
    """Batch sampler of duration-bucketed batches, sharded over DDP ranks and resumable.

    Every epoch's global batch list is a function of ``(seed, epoch)`` only, so all ranks build
    the same one; rank ``r`` takes ``batches[r::num_replicas]``. Each rank gets the same number of
    batches and, unless ``drop_last``, every utterance is seen exactly once per epoch across ranks
    (see :func:`split_for_replicas`). Use it as ``DataLoader(batch_sampler=...)`` and call
    :meth:`set_epoch` before each epoch (Lightning does so for ``batch_sampler.sampler``, not
    for ``batch_sampler`` itself: wrap it, or call it yourself).

    Mid-epoch resume: ``state_dict(batches_done=k)`` records that this rank has consumed the
    first ``k`` batches of the current epoch. The caller passes ``k`` (e.g. the trainer's batch
    count) because the sampler cannot know it: DataLoader workers prefetch batches ahead of use.
    After :meth:`load_state_dict`, the next ``__iter__`` (and ``len`` until then) covers only the
    remaining batches of that epoch; later epochs are whole again.

    Args:
        durations: Seconds per utterance, indexed like the dataset.
        max_batch_seconds: Cap on padded seconds per batch (``rows * longest``); an utterance
            longer than the cap gets a batch of its own.
        batch_size: Fixed utterances per batch within each bucket, instead of a seconds cap.
        num_buckets: Number of equal-count duration buckets.
        shuffle: Reshuffle batch contents and order every epoch; ``False`` for evaluation.
        seed: Seed shared by all ranks; with the epoch it fixes the batches.
        drop_last: Drop the ``len % num_replicas`` leftover batches instead of splitting large
            batches to even out the ranks.
        num_replicas: Number of DDP processes; defaults to the initialized process group's world
            size, else 1.
        rank: This process's rank; defaults to the process group's rank, else 0.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float | None = None,
        batch_size: int | None = None,
        num_buckets: int = DEFAULT_NUM_BUCKETS,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        self.durations = _as_durations(durations)
        _check_batching(max_batch_seconds, batch_size, num_buckets)
        if seed < 0:
            raise ConfigError(f"seed must be >= 0 (numpy seeds are non-negative), got {seed}")
        self.max_batch_seconds = max_batch_seconds
        self.batch_size = batch_size
        self.num_buckets = num_buckets
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas, self.rank = _default_world(num_replicas, rank)
        self.epoch = 0
        self._plan_cache: tuple[tuple[int, int], Batches] | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches already done on this rank)
        self._plan(self.epoch)  # a configuration that cannot be sharded fails here, not later

    # -------------------------------------------------------------------------- the plan
    def _plan(self, epoch: int) -> Batches:
        """The global batch list of ``epoch``, after evening out the replicas (cached)."""
        key = (self.seed, epoch)
        if self._plan_cache is None or self._plan_cache[0] != key:
            batches = make_batches(
                self.durations,
                max_batch_seconds=self.max_batch_seconds,
                batch_size=self.batch_size,
                num_buckets=self.num_buckets,
                shuffle=self.shuffle,
                rng=np.random.default_rng([self.seed, epoch]),
            )
            batches = split_for_replicas(batches, self.num_replicas, drop_last=self.drop_last)
            self._plan_cache = (key, batches)
        return self._plan_cache[1]

    def _skip(self) -> int:
        """Batches of the current epoch to skip on the next iteration (after a resume)."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1]
        return 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next ``__iter__`` yields."""
        if self._resume is not None and self._resume[0] != epoch:
            log.debug("dropping resume position of epoch %s for epoch %s", self._resume[0], epoch)
            self._resume = None
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._plan(self.epoch)[self.rank :: self.num_replicas]
        skip = self._skip()
        self._resume = None  # the resumed epoch is served once; later epochs are whole
        return iter([list(batch) for batch in mine[skip:]])

    def __len__(self) -> int:
        """Batches this rank yields on the next ``__iter__``."""
        return len(self._plan(self.epoch)) // self.num_replicas - self._skip()

    @property
    def batches_per_epoch(self) -> int:
        """Batches this rank yields in a whole epoch, counting those a resume skips."""
        return len(self._plan(self.epoch)) // self.num_replicas

    @property
    def padding_fraction(self) -> float:
        """Padding share of the current epoch's batches over all ranks (see padding_fraction)."""
        return padding_fraction(self._plan(self.epoch), self.durations)

    @property
    def total_seconds(self) -> float:
        """Seconds of audio in all utterances (over all ranks)."""
        return float(self.durations.sum())

    # -------------------------------------------------------------------------- resume
    def state_dict(self, batches_done: int = 0) -> dict[str, int]:
        """Position to resume from.

        Args:
            batches_done: Batches of the current epoch this rank has fully consumed (the
                trainer knows; the sampler does not, because workers prefetch).
        """
        return {
            "epoch": self.epoch,
            "batches_done": int(batches_done),
            "seed": self.seed,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next ``__iter__`` skips the ``batches_done`` first batches of ``epoch``."""
        try:
            epoch, done, seed = int(state["epoch"]), int(state["batches_done"]), int(state["seed"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"bad sampler state {dict(state)!r}: expected integer epoch, batches_done and seed"
            ) from err
        if seed != self.seed:
            log.warning(
                "resuming with the checkpoint's sampler seed %s instead of %s", seed, self.seed
            )
            self.seed = seed
        replicas = int(state.get("num_replicas", self.num_replicas))
        if replicas != self.num_replicas:
            log.warning(
                "sampler state saved with %s replicas, now %s: epoch %s restarts at its start",
                replicas,
                self.num_replicas,
                epoch,
            )
            done = 0
        self.epoch = epoch
        per_rank = len(self._plan(epoch)) // self.num_replicas
        if not 0 <= done <= per_rank:
            raise ConfigError(
                f"sampler state says {done} batches done in epoch {epoch}, but each rank has "
                f"{per_rank}: the checkpoint does not match this data or batching configuration"
            )
        self._resume = (epoch, done)
