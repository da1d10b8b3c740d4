"""One decoding path for every runtime: CTC logits in, text and word timestamps out.

:class:`DecodingOptions` says how (greedy, or prefix beam search with an optional word n-gram LM)
and :class:`CTCDecoder` does it. Lightning ``validate``/``test``/``predict``, the ``Transcriber``
(``transcribe``, ``serve``, the SageMaker handler) and the export check all decode through it,
so a clip gets the same transcript whichever runtime scores or serves it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from asr_lightning.decoding.beam import BeamSearchDecoder
from asr_lightning.decoding.confidence import (
    log_softmax,
    token_confidences,
    utterance_confidence,
    word_confidence,
)
from asr_lightning.decoding.greedy import GreedyHypothesis, greedy_path, ids_to_text
from asr_lightning.decoding.lm import load_lm
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions

#: Prefix of SentencePiece tokens that begin a word (Parakeet and other BPE vocabularies).
WORD_START = "\u2581"
#: Distinct words whose text a decoder remembers.
WORD_CACHE_SIZE = 65_536


@dataclass(frozen=True)
class Word:
    """A word and where it is spoken, in seconds from the start of the clip."""

    word: str
    start: float
    end: float
    confidence: float | None = None
    """The model's confidence in the word, in [0, 1] (see
    :mod:`asr_lightning.decoding.confidence`); ``None`` where none was computed."""


@dataclass(frozen=True)
class Decoded:
    """One clip's transcript: its text and its words with their times."""

    text: str
    """Words separated by single spaces; empty when nothing but blanks was emitted."""
    words: list[Word] = field(default_factory=list)
    """Per-word timestamps and confidences from the CTC alignment of the decoded path."""
    confidence: float | None = None
    """The utterance's confidence in [0, 1] (see :mod:`asr_lightning.decoding.confidence`)."""


class CTCDecoder:
    """Decodes a model's logits with :class:`DecodingOptions`: text and word timestamps.

    Word timestamps come from the decoded path: a word starts at the first frame of its first
    token and ends after its last token (frame x samples per frame / sampling rate). Words are
    split at the word delimiter (``|`` in character vocabularies) or at ``▁`` pieces. Word and
    utterance confidences come from the posteriors of that path
    (:mod:`asr_lightning.decoding.confidence`).
    """

    def __init__(
        self,
        tokenizer: Any,
        blank_id: int,
        samples_per_frame: int,
        options: DecodingOptions = DEFAULT_DECODING,
        sample_rate: int = 16_000,
    ) -> None:
        """
        Args:
            tokenizer: the model's CTC tokenizer.
            blank_id: the CTC blank id.
            samples_per_frame: audio samples per output frame (320 for wav2vec2).
            options: how to decode.
            sample_rate: the audio's sampling rate, for word times.
        """
        self.tokenizer = tokenizer
        self.blank_id = blank_id
        self.options = options
        self.seconds_per_frame = samples_per_frame / sample_rate
        self.tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer.get_vocab()))))
        self.delimiter = getattr(tokenizer, "word_delimiter_token", None)
        self.beam_search = None
        if options.beam:
            lm = load_lm(options.lm) if options.lm else None
            self.beam_search = BeamSearchDecoder(self.tokens, blank_id, lm, options, self.delimiter)
        # Words repeat (Zipf): cache their text instead of a tokenizer call per word.
        self._word_text = lru_cache(maxsize=WORD_CACHE_SIZE)(self._text_of)

    def path(self, logits: np.ndarray) -> GreedyHypothesis:
        """The decoded path (token ids and their frames) of one clip's ``(T, V)`` logits."""
        if self.beam_search is not None:
            return self.beam_search.decode(logits)
        return greedy_path(logits, self.blank_id)

    def decode(self, logits: np.ndarray) -> Decoded:
        """Text and words of one clip's ``(T, V)`` logits (every frame valid)."""
        logits = np.asarray(logits)
        path = self.path(logits)
        text = ids_to_text(path.ids, self.tokenizer) if path.ids else ""
        log_probs = log_softmax(logits)  # (T, V)
        words = self._words(path, token_confidences(log_probs, path))
        scores = [word.confidence for word in words]
        return Decoded(
            " ".join(text.split()), words, utterance_confidence(scores, log_probs, self.blank_id)
        )

    def decode_batch(self, logits: Any, lengths: Any) -> list[Decoded]:
        """:meth:`decode` of each row of padded ``(B, T, V)`` logits, cut at ``lengths``."""
        logits = _numpy(logits)
        return [
            self.decode(row[: int(length)])
            for row, length in zip(logits, _numpy(lengths), strict=True)
        ]

    def texts(self, logits: Any, lengths: Any) -> list[str]:
        """The transcripts of :meth:`decode_batch`."""
        return [decoded.text for decoded in self.decode_batch(logits, lengths)]

    def _text_of(self, ids: tuple[int, ...]) -> str:
        return ids_to_text(ids, self.tokenizer).strip()

    def _words(self, path: GreedyHypothesis, token_scores: list[float]) -> list[Word]:
        seconds = self.seconds_per_frame
        words = []
        for first, last, start, end in word_spans(path, self.tokens, self.delimiter):
            text = self._word_text(tuple(path.ids[first:last]))
            if text:
                confidence = word_confidence(token_scores[first:last])
                words.append(
                    Word(text, round(start * seconds, 3), round(end * seconds, 3), confidence)
                )
        return words


def _numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().float().cpu() if array.is_floating_point() else array.cpu()
        return array.numpy()
    return np.asarray(array)


def word_spans(
    path: GreedyHypothesis, tokens: Sequence[str], delimiter: str | None
) -> Iterator[tuple[int, int, int, int]]:
    """``(first token, token past the end, first frame, frame past the end)`` of each word of a
    decoded path (token positions index ``path.ids``; delimiters belong to no word)."""
    first_token = None
    start = end = 0
    for position, (token_id, first, last) in enumerate(
        zip(path.ids, path.start_frames, path.end_frames, strict=True)
    ):
        token = tokens[token_id] if token_id < len(tokens) else ""
        if token == delimiter or (token.startswith(WORD_START) and first_token is not None):
            if first_token is not None:
                yield first_token, position, start, end
            first_token = None
            if token == delimiter:
                continue
        if first_token is None:
            first_token, start = position, first
        end = last
    if first_token is not None:
        yield first_token, len(path.ids), start, end
