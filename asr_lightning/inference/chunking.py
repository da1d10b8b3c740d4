"""Long audio in bounded memory: overlapping chunks in, one stitched sequence of logits out.

A clip longer than ``chunk_s`` is cut into windows of ``chunk_s`` seconds that overlap by
``2 * stride_s``; each window runs through the model on its own, and of each window's logits
only the middle part is kept (its first and last ``stride_s`` seconds, where the model saw
little context, are dropped, except at the ends of the clip). The kept parts tile the clip
exactly, so the stitched logits have as many frames as unchunked inference would. A clip no
longer than ``chunk_s`` is one window: its result is unchunked inference.

Pure numpy, no model: the transcriber runs the windows in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asr_lightning.errors import ConfigError


@dataclass(frozen=True)
class ChunkOptions:
    """How long audio is cut into windows.

    Args:
        chunk_s: Window length in seconds; clips up to this long are run in one pass.
        stride_s: Context in seconds dropped from each side of an inner window's logits.
    """

    chunk_s: float = 30.0
    stride_s: float = 4.0

    def __post_init__(self) -> None:
        if self.chunk_s <= 0 or self.stride_s < 0:
            raise ConfigError(
                f"chunk_s must be > 0 and stride_s >= 0, got {self.chunk_s}, {self.stride_s}"
            )
        if 2 * self.stride_s >= self.chunk_s:
            raise ConfigError(
                f"chunk_s ({self.chunk_s}) must be longer than twice stride_s ({self.stride_s}) "
                "so that each window contributes frames of its own"
            )


@dataclass(frozen=True)
class Chunk:
    """One window of a clip and which of its output frames belong to the stitched result."""

    start: int
    """First sample of the window (a multiple of the samples per frame)."""
    end: int
    """Sample just past the window."""
    keep_start: int
    """First output frame of the window that is kept (window-local)."""
    keep_end: int | None
    """Frame just past the kept ones (window-local); ``None``: up to the window's last frame."""


def _multiple(value: float, step: int) -> int:
    return max(step, int(round(value / step)) * step)


def plan_chunks(
    num_samples: int, samples_per_frame: int, options: ChunkOptions, sample_rate: int
) -> list[Chunk]:
    """Windows covering ``num_samples`` samples.

    Args:
        num_samples: length of the clip in samples.
        samples_per_frame: audio samples per CTC output frame of the model.
        options: window and stride lengths.
        sample_rate: samples per second of the clip.
    """
    chunk = _multiple(options.chunk_s * sample_rate, samples_per_frame)
    if num_samples <= chunk:
        return [Chunk(0, num_samples, 0, None)]
    stride = int(round(options.stride_s * sample_rate / samples_per_frame)) * samples_per_frame
    step = chunk - 2 * stride
    chunks, start = [], 0
    while True:
        end = min(start + chunk, num_samples)
        last = end == num_samples
        keep_start = stride // samples_per_frame if start else 0
        keep_end = None if last else (chunk - stride) // samples_per_frame
        chunks.append(Chunk(start, end, keep_start, keep_end))
        if last:
            return chunks
        start += step


def stitch(chunks: Sequence[Chunk], logits: Sequence[np.ndarray]) -> np.ndarray:
    """The kept frames of every window's ``(T_i, V)`` logits, concatenated: ``(T, V)``."""
    if len(chunks) != len(logits):
        raise ValueError(f"got {len(logits)} logit arrays for {len(chunks)} chunks")
    if len(chunks) == 1:
        return logits[0]
    parts = [part[c.keep_start : c.keep_end] for c, part in zip(chunks, logits, strict=True)]
    return np.concatenate(parts, axis=0)
