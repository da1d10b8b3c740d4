"""Give freed heap memory back to the operating system during training.

Training on batches of varying shapes (duration buckets) frees and reallocates tensors of
many sizes. glibc's ``malloc`` keeps freed memory in its arenas for reuse instead of returning
it, so a process's resident memory climbs in steps over the epochs although the live memory is
flat: on the AN4 benchmark the main process grew from 1.8 GB after the first epoch to 2.55 GB
after the fifteenth, where calling ``malloc_trim`` at each epoch end kept it at 0.83-0.84 GB
(BENCHMARKS.md). :class:`ReleaseMemory` does that at epoch ends, after validation and testing,
and optionally every N batches; on a C library without ``malloc_trim`` it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

import lightning.pytorch as pl

from asr_lightning.errors import ConfigError


@cache
def _malloc_trim() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_freed_memory() -> bool:
    """Return the heap's free memory to the OS (glibc ``malloc_trim(0)``).

    Returns:
        ``True`` when memory was released, ``False`` when none was or the C library has no
        ``malloc_trim``.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class ReleaseMemory(pl.Callback):
    """Calls :func:`release_freed_memory` after each training epoch, validation and test.

    The memory given back is faulted in again by the next epoch's first batches: on AN4's
    15-second CPU epochs that cost about 7 % of the training speed (BENCHMARKS.md); on epochs of
    minutes or hours it is negligible.

    Args:
        enabled: ``False`` turns the callback off (``--release_memory.enabled false``).
        every_n_batches: also after every N training batches (``None``: only at those ends).
            Each call makes the next batches fault their memory in again: keep N in the
            hundreds.
    """

    def __init__(self, enabled: bool = True, every_n_batches: int | None = None) -> None:
        if every_n_batches is not None and every_n_batches < 1:
            raise ConfigError(
                f"release_memory.every_n_batches must be >= 1 or null, got {every_n_batches}"
            )
        self.enabled = enabled
        self.every_n_batches = every_n_batches

    def _release(self) -> None:
        if self.enabled:
            release_freed_memory()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.every_n_batches and (batch_idx + 1) % self.every_n_batches == 0:
            self._release()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._release()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._release()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._release()
