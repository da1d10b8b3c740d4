"""Window planning and stitching: the kept frames tile the clip exactly."""

from __future__ import annotations

import numpy as np
import pytest

from asr_lightning.errors import ConfigError
from asr_lightning.inference.chunking import ChunkOptions, plan_chunks, stitch

RATE = 16_000


def _fake_logits(chunks, spf, total_frames):
    """Each window's 'logits' are the global frame indices it covers: (T_i, 1)."""
    out = []
    for chunk in chunks:
        first = chunk.start // spf
        frames = min(-(-(chunk.end - chunk.start) // spf), total_frames - first)
        out.append(np.arange(first, first + frames)[:, None])
    return out


@pytest.mark.parametrize("seconds", [0.5, 30.0, 30.1, 61.7, 600.0])
@pytest.mark.parametrize("spf", [320, 640])
def test_windows_tile_the_clip(seconds, spf):
    options = ChunkOptions(chunk_s=30.0, stride_s=4.0)
    samples = int(seconds * RATE)
    chunks = plan_chunks(samples, spf, options, RATE)
    total = -(-samples // spf)
    stitched = stitch(chunks, _fake_logits(chunks, spf, total))
    np.testing.assert_array_equal(stitched[:, 0], np.arange(total))
    assert all(c.end - c.start <= 30 * RATE for c in chunks)
    assert all(c.start % spf == 0 for c in chunks)
    assert chunks[-1].end == samples
    if seconds <= 30:
        assert len(chunks) == 1 and chunks[0].keep_end is None


def test_options_are_checked():
    with pytest.raises(ConfigError, match="twice stride_s"):
        ChunkOptions(chunk_s=8.0, stride_s=4.0)
    with pytest.raises(ConfigError):
        ChunkOptions(chunk_s=0.0)
