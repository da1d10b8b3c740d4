"""Duration bucketing: tight batches, every item once per epoch on every rank layout, resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lightning.data.bucketing import (
    DurationBucketSampler,
    bucket_boundaries,
    make_batches,
    padding_fraction,
    split_for_replicas,
)
from asr_lightning.errors import ConfigError


@pytest.fixture(scope="module")
def an4_durations(shared_data: Path) -> list[float]:
    """Seconds of the 948 AN4 training utterances, read from their headers."""
    paths = sorted((shared_data / "an4" / "wav" / "an4_clstk").glob("*/*.sph"))
    assert len(paths) == 948
    return [sf.info(str(path)).duration for path in paths]


def _durations(count: int, seed: int = 0) -> list[float]:
    """Distinct, speech-like durations (seconds)."""
    return (0.5 + np.random.default_rng(seed).gamma(2.0, 2.0, size=count)).tolist()


def _rank_batches(durations, num_replicas: int, epoch: int, **kwargs) -> list[list[list[int]]]:
    per_rank = []
    for rank in range(num_replicas):
        sampler = DurationBucketSampler(durations, num_replicas=num_replicas, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append(batches)
    return per_rank


# ------------------------------------------------------------------------------ free functions
@pytest.mark.parametrize("num_buckets", [1, 2, 8, 13])
def test_bucket_boundaries_give_equal_counts(num_buckets: int) -> None:
    durations = _durations(1001)
    edges = bucket_boundaries(durations, num_buckets)
    assert len(edges) == num_buckets - 1
    assert edges == sorted(edges)
    counts = np.bincount(np.searchsorted(edges, durations, side="right"), minlength=num_buckets)
    assert counts.sum() == 1001
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("mode", [{"max_batch_seconds": 30.0}, {"batch_size": 7}])
def test_make_batches_uses_every_item_once(mode: dict) -> None:
    durations = _durations(500)
    batches = make_batches(durations, **mode, rng=3)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(500))
    if "batch_size" in mode:
        assert max(len(batch) for batch in batches) <= 7


def test_max_batch_seconds_caps_padded_seconds_except_oversized_items() -> None:
    durations = _durations(400) + [25.0, 40.0, 19.9]  # longer than the cap: alone, not dropped
    cap = 20.0
    batches = make_batches(durations, max_batch_seconds=cap, rng=0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(durations)))
    for batch in batches:
        longest = max(durations[i] for i in batch)
        assert len(batch) * longest <= cap or len(batch) == 1
    assert [400] in batches and [401] in batches


def test_unshuffled_batches_are_deterministic_and_shortest_first() -> None:
    durations = _durations(300)
    first = make_batches(durations, batch_size=10, shuffle=False, rng=1)
    assert first == make_batches(durations, batch_size=10, shuffle=False, rng=2)
    longest = [max(durations[i] for i in batch) for batch in first]
    assert longest == sorted(longest)


def test_padding_fraction_of_known_batches() -> None:
    durations = [1.0, 2.0, 3.0, 3.0]
    # padded: 2 * 2 + 2 * 3 = 10 s for 9 s of audio
    assert padding_fraction([[0, 1], [2, 3]], durations) == pytest.approx(0.1)
    assert padding_fraction([], durations) == 0.0


def test_an4_bucketed_padding_is_far_below_random_batching(an4_durations: list[float]) -> None:
    batches = make_batches(an4_durations, max_batch_seconds=60.0, rng=0)
    bucketed = padding_fraction(batches, an4_durations)
    size = round(len(an4_durations) / len(batches))  # same mean batch size, random membership
    order = np.random.default_rng(0).permutation(len(an4_durations)).tolist()
    random_batches = [order[i : i + size] for i in range(0, len(order), size)]
    shuffled = padding_fraction(random_batches, an4_durations)
    default = DurationBucketSampler(an4_durations, max_batch_seconds=200.0).padding_fraction
    print(
        f"\nAN4 padding: bucketed (60 s cap, {len(batches)} batches) {bucketed:.1%}, "
        f"random batches of {size} {shuffled:.1%}, sampler with 200 s cap {default:.1%}"
    )
    assert bucketed < 0.05
    assert default < 0.10
    assert shuffled > 5 * bucketed


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"max_batch_seconds": 10.0, "batch_size": 4},
        {"max_batch_seconds": 0.0},
        {"max_batch_seconds": float("nan")},
        {"batch_size": 0},
        {"batch_size": 4, "num_buckets": 0},
        {"batch_size": 4, "num_replicas": 2, "rank": 2},
        {"batch_size": 4, "seed": -1},
    ],
)
def test_bad_configuration_raises_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        DurationBucketSampler([1.0, 2.0, 3.0], **kwargs)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_durations_raise_config_error_naming_the_item(bad: float) -> None:
    with pytest.raises(ConfigError, match="item 1"):
        make_batches([1.0, bad, 2.0], batch_size=2)


# ------------------------------------------------------------------------------ replicas
def test_split_for_replicas_splits_the_largest_batches_or_drops() -> None:
    batches = [[0], [1, 2, 3, 4], [5, 6]]
    assert split_for_replicas(batches, 2) == [[0], [1, 2], [3, 4], [5, 6]]
    assert split_for_replicas(batches, 5) == [[0], [1], [2], [3, 4], [5, 6]]
    assert split_for_replicas(batches, 2, drop_last=True) == [[0], [1, 2, 3, 4]]
    with pytest.raises(ConfigError, match="replicas"):
        split_for_replicas([[0], [1], [2]], 2)


@pytest.mark.parametrize(
    ("count", "num_replicas", "mode"),
    [
        (101, 2, {"batch_size": 8}),
        (257, 3, {"max_batch_seconds": 40.0}),
        (3, 2, {"batch_size": 8, "num_buckets": 1}),  # one batch of three, two ranks: split
        (2, 2, {"max_batch_seconds": 1000.0}),
        (50, 4, {"batch_size": 1, "drop_last": True}),
    ],
)
def test_every_item_once_per_epoch_across_ranks(count: int, num_replicas: int, mode: dict) -> None:
    durations = _durations(count)
    for epoch in range(3):
        per_rank = _rank_batches(durations, num_replicas, epoch, seed=5, **mode)
        assert len({len(batches) for batches in per_rank}) == 1, "unequal batch counts"
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert len(seen) == len(set(seen)), "an item was repeated"
        if mode.get("drop_last"):
            assert len(seen) == count - count % num_replicas
        else:
            assert sorted(seen) == list(range(count))


@pytest.mark.parametrize(("durations", "batch_size"), [([1.0], 4), ([1.0, 2.0, 3.0], 1)])
def test_unsplittable_batches_are_a_config_error(durations: list[float], batch_size: int) -> None:
    with pytest.raises(ConfigError, match="drop_last"):
        DurationBucketSampler(durations, batch_size=batch_size, num_replicas=2, rank=0)
    sampler = DurationBucketSampler(
        durations, batch_size=batch_size, num_replicas=2, rank=0, drop_last=True
    )
    assert len(sampler) == len(durations) // 2


# ------------------------------------------------------------------------------ epochs, resume
def test_batches_depend_on_seed_and_epoch_only() -> None:
    durations = _durations(400)
    sampler = DurationBucketSampler(durations, max_batch_seconds=30.0, seed=7)
    again = DurationBucketSampler(durations, max_batch_seconds=30.0, seed=7)
    epoch0 = list(sampler)
    assert epoch0 == list(again) == list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0
    assert {frozenset(b) for b in epoch1} != {frozenset(b) for b in epoch0}, "same batches"
    other_seed = DurationBucketSampler(durations, max_batch_seconds=30.0, seed=8)
    assert list(other_seed) != epoch0


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(num_replicas: int) -> None:
    durations = _durations(301)
    for rank in range(num_replicas):
        kwargs = {"max_batch_seconds": 25.0, "seed": 3, "num_replicas": num_replicas, "rank": rank}
        sampler = DurationBucketSampler(durations, **kwargs)
        sampler.set_epoch(2)
        full = list(sampler)
        done = len(full) // 3
        state = sampler.state_dict(batches_done=done)
        assert {"epoch": 2, "batches_done": done, "seed": 3}.items() <= state.items()

        resumed = DurationBucketSampler(durations, **{**kwargs, "seed": 0})  # seed from state
        resumed.load_state_dict(state)
        resumed.set_epoch(2)  # what Lightning does at the start of the resumed epoch
        assert len(resumed) == len(full) - done
        assert list(resumed) == full[done:]
        assert len(resumed) == len(full)  # the skip applies to one iteration only

        sampler.set_epoch(3)
        resumed.set_epoch(3)
        assert list(resumed) == list(sampler)


def test_resume_state_that_does_not_fit_is_a_config_error() -> None:
    sampler = DurationBucketSampler(_durations(50), batch_size=10)
    with pytest.raises(ConfigError, match="batches done"):
        sampler.load_state_dict({"epoch": 0, "batches_done": 99, "seed": 0})
    with pytest.raises(ConfigError, match="sampler state"):
        sampler.load_state_dict({"epoch": 0})


def test_total_seconds_and_length_without_iterating() -> None:
    durations = _durations(120)
    sampler = DurationBucketSampler(durations, batch_size=16, num_buckets=4)
    assert sampler.total_seconds == pytest.approx(sum(durations))
    expected = sum(-(-count // 16) for count in np.diff([0, 30, 60, 90, 120]))
    assert len(sampler) == expected == len(list(sampler))
    assert list(itertools.chain(*sampler)) != list(range(120))  # shuffled
