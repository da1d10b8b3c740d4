"""CTC prefix beam search with an optional word n-gram language model (shallow fusion).

The classic algorithm (Hannun et al., 2014): each hypothesis is a collapsed token prefix with
two probabilities, ending in blank and not ending in blank; at every frame each prefix is
extended by the likely tokens, and the ``beam_width`` best prefixes survive. A word is complete
when the word delimiter (``|`` in character vocabularies) or a word-initial ``▁`` piece
(SentencePiece vocabularies) follows it, and at the end of the clip; then the language model
adds ``alpha * ln P(word | previous words) + beta``.

Pure numpy and Python, no compiled dependency (see the README for why not pyctcdecode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asr_lightning.decoding.greedy import GreedyHypothesis
from asr_lightning.decoding.lm import BOS, EOS, LanguageModel
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions

NEG_INF = -math.inf
WORD_START = "\u2581"


@dataclass(slots=True)
class _Beam:
    ids: tuple[int, ...]
    frames: tuple[int, ...]
    words: tuple[str, ...]
    partial: str
    lm_score: float
    p_blank: float = NEG_INF
    p_token: float = NEG_INF

    @property
    def acoustic(self) -> float:
        return _logaddexp(self.p_blank, self.p_token)


def _logaddexp(a: float, b: float) -> float:
    """``ln(e^a + e^b)`` of two Python floats (numpy's ufunc costs ~1 us a call)."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class BeamSearchDecoder:
    """Prefix beam search over one clip's ``(T, V)`` logits."""

    def __init__(
        self,
        tokens: Sequence[str],
        blank_id: int,
        lm: LanguageModel | None = None,
        options: DecodingOptions = DEFAULT_DECODING,
        word_delimiter: str | None = "|",
    ) -> None:
        """
        Args:
            tokens: token string of each id (``tokenizer.convert_ids_to_tokens``).
            blank_id: the CTC blank id.
            lm: a word language model whose words are spelled like the tokens; ``None``: none.
            options: beam width, LM weight and word bonus, pruning (the LM itself is ``lm``).
            word_delimiter: the token that separates words (``None`` for ``▁`` vocabularies).
        """
        self.tokens = list(tokens)
        self.blank_id = blank_id
        self.lm = lm
        self.options = options
        self.word_delimiter = word_delimiter

    def _word_score(self, words: tuple[str, ...], word: str) -> float:
        if self.lm is None:
            return 0.0
        return self.options.alpha * self.lm.score((BOS, *words), word) + self.options.beta

    def _extend(self, beam: _Beam, token_id: int, frame: int) -> _Beam:
        """The prefix ``beam + token``, with the LM score of a word it completes."""
        token = self.tokens[token_id]
        words, partial, lm_score = beam.words, beam.partial, beam.lm_score
        starts_word = token == self.word_delimiter or token.startswith(WORD_START)
        if starts_word and partial:
            lm_score += self._word_score(words, partial)
            words, partial = (*words, partial), ""
        if token != self.word_delimiter:
            partial += token[1:] if token.startswith(WORD_START) else token
        return _Beam((*beam.ids, token_id), (*beam.frames, frame), words, partial, lm_score)

    def decode(self, logits: np.ndarray) -> GreedyHypothesis:
        """The best path of ``(T, V)`` logits (or log-probabilities) of one clip."""
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (frames, vocab), got {logits.shape}")
        log_probs = _log_softmax(logits.astype(np.float64))
        beams = {(): _Beam((), (), (), "", 0.0, p_blank=0.0)}
        for frame, row in enumerate(log_probs):
            candidates = np.flatnonzero(row >= self.options.token_min_logp).tolist()
            beams = self._step(beams, row.tolist(), candidates, frame)
        best = max(beams.values(), key=self._final_score)
        return GreedyHypothesis(
            ids=list(best.ids),
            start_frames=list(best.frames),
            end_frames=[f + 1 for f in best.frames],
        )

    def _step(
        self,
        beams: dict[tuple[int, ...], _Beam],
        row: list[float],
        candidates: list[int],
        frame: int,
    ) -> dict[tuple[int, ...], _Beam]:
        following: dict[tuple[int, ...], _Beam] = {}

        def slot(beam: _Beam, token_id: int | None) -> _Beam:
            """The entry of ``beam`` (token None) or ``beam + token`` at this frame."""
            key = beam.ids if token_id is None else (*beam.ids, token_id)
            if key not in following:
                known = beams.get(key)  # the same prefix reached earlier keeps its frames
                if known is None:
                    known = self._extend(beam, token_id, frame)
                following[key] = _Beam(
                    known.ids, known.frames, known.words, known.partial, known.lm_score
                )
            return following[key]

        for beam in beams.values():
            last = beam.ids[-1] if beam.ids else None
            for token_id in candidates:
                lp = row[token_id]
                if token_id == self.blank_id:
                    same = slot(beam, None)
                    same.p_blank = _logaddexp(same.p_blank, beam.acoustic + lp)
                elif token_id == last:
                    same = slot(beam, None)
                    same.p_token = _logaddexp(same.p_token, beam.p_token + lp)
                    longer = slot(beam, token_id)
                    longer.p_token = _logaddexp(longer.p_token, beam.p_blank + lp)
                else:
                    longer = slot(beam, token_id)
                    longer.p_token = _logaddexp(longer.p_token, beam.acoustic + lp)
        scored = sorted(
            ((b.acoustic + b.lm_score, b) for b in following.values()),
            key=lambda pair: pair[0],
            reverse=True,
        )
        floor = scored[0][0] + self.options.beam_prune_logp
        kept = [beam for score, beam in scored[: self.options.beam_width] if score >= floor]
        return {beam.ids: beam for beam in kept}

    def _final_score(self, beam: _Beam) -> float:
        score = beam.acoustic + beam.lm_score
        if self.lm is None:
            return score
        words = beam.words
        if beam.partial:
            score += self._word_score(words, beam.partial)
            words = (*words, beam.partial)
        return score + self.options.alpha * self.lm.score((BOS, *words), EOS)
