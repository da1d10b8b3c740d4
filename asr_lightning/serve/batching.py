"""Dynamic batching: concurrent requests share one model call.

Request threads :meth:`DynamicBatcher.submit` decoded clips and wait on a future; one worker
thread takes the first waiting clip, collects more until ``max_batch_size`` clips are in hand or
``max_wait_ms`` has passed since the first, and runs them through one call (one
``Transcriber.transcribe_arrays``). A call that raises is retried clip by clip, so a clip that
breaks the model fails alone and never the batch. ``max_batch_size=1`` turns batching off.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_lightning.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds :meth:`DynamicBatcher.close` waits for the worker to finish the batch in hand.
CLOSE_TIMEOUT_S = 30.0
_STOP = object()

RunBatch = Callable[[Sequence[np.ndarray]], Sequence[Any]]
#: Told of each model call: its clip count and the clips still waiting.
OnBatch = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchOptions:
    """How requests are grouped.

    Args:
        max_batch_size: Most clips in one model call (1: no batching).
        max_wait_ms: Longest a clip waits for others once it is first in line, in milliseconds.
    """

    max_batch_size: int = 8
    max_wait_ms: float = 10.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


@dataclass
class BatchStats:
    """Counters of what the worker has run."""

    batches: int = 0
    items: int = 0
    largest: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class DynamicBatcher:
    """A queue of clips in front of a batch function, run by one worker thread."""

    def __init__(
        self,
        run: RunBatch,
        options: BatchOptions = BatchOptions(),
        on_batch: OnBatch | None = None,
    ) -> None:
        """
        Args:
            run: clips -> one result per clip, in order (``Transcriber.transcribe_arrays``).
            options: batch size and wait.
            on_batch: called before each model call with its size and the queue depth
                (the server's metrics).
        """
        self.run = run
        self.options = options
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="asr-batcher", daemon=True)
        self._thread.start()

    def submit(self, audio: np.ndarray) -> Future:
        """A future of the clip's result (its exception if the model failed on it)."""
        future: Future = Future()
        if self._closed:
            future.set_exception(RuntimeError("the batcher is closed"))
            return future
        self._queue.put((audio, future))
        return future

    @property
    def queue_depth(self) -> int:
        """Clips waiting for the model (approximate, as any queue size read under load)."""
        return self._queue.qsize()

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stops taking clips; those already queued are still run."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        log.info(
            "batcher: %d requests in %d batches (mean %.2f, largest %d)",
            self.stats.items,
            self.stats.batches,
            self.stats.mean_batch_size,
            self.stats.largest,
        )

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch_size:
                item = self._next(deadline)
                if item is None:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)
        self._refuse_rest()

    def _refuse_rest(self) -> None:
        """Fails clips that raced :meth:`close` into the queue after the stop mark."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP and item[1].set_running_or_notify_cancel():
                item[1].set_exception(RuntimeError("the batcher is closed"))

    def _next(self, deadline: float) -> Any:
        """The next queued item before ``deadline`` (items already queued are always taken)."""
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None

    def _run(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        live = [(audio, future) for audio, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        if self.on_batch is not None:
            self.on_batch(len(live), self._queue.qsize())
        try:
            results = list(self.run([audio for audio, _ in live]))
            if len(results) != len(live):
                raise RuntimeError(f"{len(results)} results for a batch of {len(live)}")
        except Exception as err:  # one bad clip must not fail the others: retry alone
            if len(live) == 1:
                log.warning("batch of one failed: %s: %s", type(err).__name__, err)
                live[0][1].set_exception(err)
                return
            log.warning("a batch of %d failed (%s); retrying one by one", len(live), err)
            for audio, future in live:
                self._retry_alone(audio, future)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)

    def _retry_alone(self, audio: np.ndarray, future: Future) -> None:
        try:
            future.set_result(list(self.run([audio]))[0])
        except Exception as err:  # reported to this clip's request only
            future.set_exception(err)
