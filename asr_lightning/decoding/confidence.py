"""Confidences from CTC posteriors: how sure the model is of each token, word and utterance.

The measure is the one NeMo calls ``max_prob`` with ``min`` aggregation, on the decoded path:

- a token's confidence is the highest posterior the model gives that token over the frames of
  its run (CTC posteriors are peaky: a token is emitted on one or two frames, blanks around it);
- a word's confidence is the lowest of its tokens' (one doubtful letter makes a doubtful word);
- an utterance's confidence is the mean of its words', or, when nothing but blanks was
  emitted, the mean blank posterior over its frames (how sure the model is that no one spoke).

All are probabilities in [0, 1]. They are computed from the acoustic posteriors of the path
that was decoded, so with beam search and an LM they say how well the audio supports the chosen
words. Pure numpy: every runtime shares them through :class:`~asr_lightning.decoding.decoder.
CTCDecoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asr_lightning.decoding.greedy import GreedyHypothesis


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-posteriors of ``(T, V)`` logits (log-probabilities are returned unchanged)."""
    logits = np.asarray(logits, dtype=np.float32)
    peak = logits.max(axis=-1, keepdims=True)
    shifted = logits - peak
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def token_confidences(log_probs: np.ndarray, path: GreedyHypothesis) -> list[float]:
    """The peak posterior of each token of ``path`` over the frames of its run."""
    return [
        float(np.exp(log_probs[first:last, token].max()))
        for token, first, last in zip(path.ids, path.start_frames, path.end_frames, strict=True)
    ]


def word_confidence(token_scores: Sequence[float]) -> float:
    """A word's confidence: the lowest of its tokens' (1.0 for no tokens)."""
    return round(min(token_scores, default=1.0), 4)


def utterance_confidence(
    word_scores: Sequence[float], log_probs: np.ndarray, blank_id: int
) -> float:
    """The mean word confidence, or the mean blank posterior when there are no words."""
    if word_scores:
        return round(float(np.mean(word_scores)), 4)
    if log_probs.shape[0] == 0:
        return 1.0
    return round(float(np.exp(log_probs[:, blank_id]).mean()), 4)
