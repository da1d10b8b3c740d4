"""Freed heap memory goes back to the OS; the callback is on in every asr-lightning run."""

from __future__ import annotations

import platform

import psutil
import pytest

from asr_lightning.errors import ConfigError
from asr_lightning.training.memory import ReleaseMemory, release_freed_memory

BLOCK = 64 * 1024  # under glibc's mmap threshold: served from the heap, not mmap
BLOCKS = 3000  # ~200 MB


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_memory_is_returned():
    blocks = [bytearray(BLOCK) for _ in range(BLOCKS)]
    for block in blocks:  # touch every page, so it is resident
        block[::4096] = b"x" * len(block[::4096])
    pin = bytearray(BLOCK)  # a live block above the others: free() alone cannot shrink the heap
    pin[0] = 1
    process = psutil.Process()
    del blocks
    before = process.memory_info().rss
    assert release_freed_memory()
    after = process.memory_info().rss
    assert before - after > BLOCKS * BLOCK // 2, (before, after)


def test_callback_rejects_a_bad_interval():
    with pytest.raises(ConfigError, match="every_n_batches"):
        ReleaseMemory(every_n_batches=0)
