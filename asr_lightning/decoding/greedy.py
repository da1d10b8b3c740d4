"""Length-aware CTC greedy decoding: argmax, cut at the true length, collapse repeats, drop blanks.

The cut matters: in a padded batch the frames past a short clip's true output length are computed
from padding, and decoding them appends garbage characters to that clip's transcript. Every
decoder here therefore takes the per-row output lengths alongside the logits.

Pure functions, no Lightning: the training module, the transcriber and the exporters share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class GreedyHypothesis:
    """One row's greedy path after collapsing repeats and dropping blanks."""

    ids: list[int]
    """Token ids, in order, one per emitted token."""
    start_frames: list[int]
    """Output frame where each emitted token's run begins (same length as ``ids``)."""
    end_frames: list[int]
    """Output frame just past each emitted token's run (exclusive; same length as ``ids``)."""


def _check_shapes(logits: torch.Tensor, output_lengths: torch.Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(
            f"logits must have shape (batch, frames, vocab), got {tuple(logits.shape)}"
        )
    batch, frames, _ = logits.shape
    if output_lengths.dim() != 1 or output_lengths.shape[0] != batch:
        raise ValueError(
            f"output_lengths must have shape ({batch},) to match logits {tuple(logits.shape)}, "
            f"got {tuple(output_lengths.shape)}"
        )
    if batch and (int(output_lengths.min()) < 0 or int(output_lengths.max()) > frames):
        raise ValueError(
            f"output_lengths must lie in [0, {frames}] (the logits' frame count), "
            f"got {output_lengths.tolist()}"
        )


def greedy_decode_with_frames(
    logits: torch.Tensor, output_lengths: torch.Tensor, blank_id: int
) -> list[GreedyHypothesis]:
    """Best-path CTC decoding that also reports where each emitted token sits in time.

    Args:
        logits: ``(B, T, V)`` logits or log-probabilities (argmax is the same for both).
        output_lengths: ``(B,)`` true number of output frames of each row; frames past it are
            padding and are ignored.
        blank_id: id of the CTC blank (the pad token for Hugging Face CTC models).

    Returns:
        One :class:`GreedyHypothesis` per row. Multiply frame indices by the model's samples per
        output frame (e.g. 320 for wav2vec2) to get sample offsets.
    """
    _check_shapes(logits, output_lengths)
    best = logits.detach().argmax(dim=-1).cpu().numpy()  # (B, T)
    lengths = output_lengths.detach().cpu().tolist()
    return [
        collapse_path(row[:length], blank_id) for row, length in zip(best, lengths, strict=True)
    ]


def greedy_path(logits: np.ndarray, blank_id: int) -> GreedyHypothesis:
    """:func:`greedy_decode_with_frames` of one clip's ``(T, V)`` numpy logits (all valid)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (frames, vocab), got {logits.shape}")
    return collapse_path(logits.argmax(axis=-1), blank_id)


def collapse_path(path: np.ndarray, blank_id: int) -> GreedyHypothesis:
    """Collapse repeats and drop blanks of a ``(T,)`` best path, keeping each run's frames."""
    if path.size == 0:
        return GreedyHypothesis(ids=[], start_frames=[], end_frames=[])
    starts = np.flatnonzero(np.diff(path, prepend=path[0] - 1))  # (R,) first frame of each run
    ends = np.append(starts[1:], path.size)
    keep = path[starts] != blank_id
    return GreedyHypothesis(
        ids=path[starts[keep]].tolist(),
        start_frames=starts[keep].tolist(),
        end_frames=ends[keep].tolist(),
    )


def greedy_decode(
    logits: torch.Tensor, output_lengths: torch.Tensor, blank_id: int
) -> list[list[int]]:
    """Best-path CTC decoding of a padded batch into collapsed, blank-free token ids.

    Args:
        logits: ``(B, T, V)`` logits or log-probabilities.
        output_lengths: ``(B,)`` true number of output frames of each row.
        blank_id: id of the CTC blank (the pad token for Hugging Face CTC models).
    """
    return [h.ids for h in greedy_decode_with_frames(logits, output_lengths, blank_id)]


def ids_to_text(ids: Sequence[int], tokenizer: Any) -> str:
    """Text of already collapsed, blank-free ids, whatever the tokenizer.

    CTC tokenizers (``Wav2Vec2CTCTokenizer``, ``ParakeetTokenizer``) collapse repeats again by
    default, which would merge a genuine double letter ("ll" in "hello") that the greedy decoder
    kept apart with a blank, so they are called with ``group_tokens=False``. Special tokens are
    kept, as the Hugging Face ASR pipeline does for CTC models, so both give the same text.

    Args:
        ids: token ids as returned by :func:`greedy_decode`.
        tokenizer: a Hugging Face tokenizer with a ``decode`` method.
    """
    from transformers import ParakeetTokenizer, Wav2Vec2CTCTokenizer

    if isinstance(tokenizer, (Wav2Vec2CTCTokenizer, ParakeetTokenizer)):
        return tokenizer.decode(list(ids), group_tokens=False)
    return tokenizer.decode(list(ids), skip_special_tokens=True)
