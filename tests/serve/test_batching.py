"""The dynamic batcher: grouping by size and wait, and a bad clip failing alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from asr_lightning.errors import ConfigError
from asr_lightning.serve.batching import BatchOptions, DynamicBatcher


class _Model:
    """Records the batch sizes it is called with; a clip of NaN makes the whole call fail."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, audios):
        with self.lock:
            self.calls.append(len(audios))
        time.sleep(self.delay_s)
        if any(np.isnan(a).any() for a in audios):
            raise RuntimeError("NaN in the batch")
        return [float(a[0]) for a in audios]


def _clip(value: float) -> np.ndarray:
    return np.full(4, value, dtype=np.float32)


def test_concurrent_clips_share_calls_and_keep_their_results():
    model = _Model(delay_s=0.02)
    batcher = DynamicBatcher(model, BatchOptions(max_batch_size=4, max_wait_ms=50))
    futures = [batcher.submit(_clip(i)) for i in range(10)]
    assert [f.result(timeout=10) for f in futures] == list(range(10))
    batcher.close()
    assert max(model.calls) == 4 and sum(model.calls) == 10 and len(model.calls) <= 4
    assert batcher.stats.items == 10 and batcher.stats.largest == 4


def test_max_batch_size_one_runs_each_clip_alone():
    model = _Model()
    batcher = DynamicBatcher(model, BatchOptions(max_batch_size=1, max_wait_ms=50))
    futures = [batcher.submit(_clip(i)) for i in range(5)]
    assert [f.result(timeout=10) for f in futures] == list(range(5))
    batcher.close()
    assert model.calls == [1] * 5


def test_a_lone_clip_waits_at_most_max_wait():
    batcher = DynamicBatcher(_Model(), BatchOptions(max_batch_size=8, max_wait_ms=30))
    start = time.monotonic()
    assert batcher.submit(_clip(7)).result(timeout=10) == 7
    assert time.monotonic() - start < 1.0
    batcher.close()


def test_a_bad_clip_fails_alone():
    model = _Model()
    batcher = DynamicBatcher(model, BatchOptions(max_batch_size=8, max_wait_ms=100))
    futures = [batcher.submit(_clip(v)) for v in (1, float("nan"), 3)]
    assert futures[0].result(timeout=10) == 1 and futures[2].result(timeout=10) == 3
    with pytest.raises(RuntimeError, match="NaN"):
        futures[1].result(timeout=10)
    batcher.close()
    assert model.calls[0] == 3 and model.calls[1:] == [1, 1, 1]


def test_queued_clips_are_run_before_close_returns_and_later_ones_refused():
    batcher = DynamicBatcher(_Model(delay_s=0.01), BatchOptions(max_batch_size=2, max_wait_ms=0))
    futures = [batcher.submit(_clip(i)) for i in range(6)]
    batcher.close()
    assert [f.result(timeout=0) for f in futures] == list(range(6))
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(_clip(0)).result(timeout=1)


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"max_wait_ms": -1}])
def test_invalid_options(kwargs):
    with pytest.raises(ConfigError):
        BatchOptions(**kwargs)


def test_each_call_is_reported_with_the_queue_left_behind():
    seen: list[tuple[int, int]] = []
    model = _Model(delay_s=0.05)
    batcher = DynamicBatcher(
        model, BatchOptions(max_batch_size=2, max_wait_ms=20), on_batch=lambda *a: seen.append(a)
    )
    futures = [batcher.submit(_clip(i)) for i in range(5)]
    assert [f.result(timeout=10) for f in futures] == list(range(5))
    batcher.close()
    assert [size for size, _ in seen] == model.calls and sum(model.calls) == 5
    assert seen[0][1] == 3  # two taken by the first call, three still waiting
    assert batcher.queue_depth == 0
