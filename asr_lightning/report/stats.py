"""What the report says about a set: error rates, the commonest errors, where errors gather.

Pure functions of :class:`~asr_lightning.report.records.ScoredUtterance` lists. Corpus rates are
summed counts over summed reference lengths, as the logged ``test/wer`` is; rates of a group
(a duration bucket, a speaker, a confidence bin) are the same sums over its utterances.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import jiwer

from asr_lightning.report.records import ScoredUtterance

#: Upper edges (seconds) of the duration buckets; the last bucket is open.
DURATION_EDGES_S = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Confidence bins of the reliability plot: this many of equal width over [0, 1].
CONFIDENCE_BINS = 10

Operation = Literal["equal", "substitute", "delete", "insert"]


@dataclass(frozen=True)
class Rates:
    """Summed error counts of a group of scored utterances."""

    utterances: int = 0
    word_errors: int = 0
    ref_words: int = 0
    char_errors: int = 0
    ref_chars: int = 0
    with_errors: int = 0  # utterances with at least one word error

    @property
    def wer(self) -> float:
        """Word error rate: errors over reference words (NaN without reference words)."""
        return self.word_errors / self.ref_words if self.ref_words else math.nan

    @property
    def cer(self) -> float:
        """Character error rate, spaces counted, as ``test/cer`` is."""
        return self.char_errors / self.ref_chars if self.ref_chars else math.nan


def rates(utterances: Sequence[ScoredUtterance]) -> Rates:
    """The summed counts of the scored ones among ``utterances``."""
    scored = [u.counts for u in utterances if u.counts is not None]
    return Rates(
        utterances=len(scored),
        word_errors=sum(c["word_errors"] for c in scored),
        ref_words=sum(c["ref_words"] for c in scored),
        char_errors=sum(c["char_errors"] for c in scored),
        ref_chars=sum(c["ref_chars"] for c in scored),
        with_errors=sum(c["word_errors"] > 0 for c in scored),
    )


@dataclass(frozen=True)
class Group:
    """The rates of the utterances sharing one label (a bucket, a speaker, a bin)."""

    label: str
    rates: Rates
    mean_confidence: float | None = None


def grouped(
    utterances: Sequence[ScoredUtterance], key: Callable[[ScoredUtterance], Hashable | None]
) -> dict[Hashable, list[ScoredUtterance]]:
    """Scored utterances by ``key`` (those it maps to ``None`` left out), in key order."""
    groups: dict[Hashable, list[ScoredUtterance]] = {}
    for utt in utterances:
        label = key(utt) if utt.counts is not None else None
        if label is not None:
            groups.setdefault(label, []).append(utt)
    return dict(sorted(groups.items(), key=lambda item: item[0]))


def duration_bucket(seconds: float | None, edges: Sequence[float] = DURATION_EDGES_S) -> int | None:
    """Index of the bucket of a duration: the first edge above it (``len(edges)``: over all)."""
    if seconds is None:
        return None
    return next((i for i, edge in enumerate(edges) if seconds < edge), len(edges))


def bucket_label(index: int, edges: Sequence[float] = DURATION_EDGES_S) -> str:
    """``"2-4 s"`` for bucket ``index``."""
    low = 0.0 if index == 0 else edges[index - 1]
    return f">= {low:g} s" if index == len(edges) else f"{low:g}-{edges[index]:g} s"


def by_duration(utterances: Sequence[ScoredUtterance]) -> list[Group]:
    """Rates per duration bucket that holds an utterance, shortest first."""
    groups = grouped(utterances, lambda u: duration_bucket(u.duration_s))
    return [Group(bucket_label(index), rates(group)) for index, group in groups.items()]


def by_speaker(utterances: Sequence[ScoredUtterance]) -> list[Group]:
    """Rates per speaker, highest WER first (then most words, then name)."""
    groups = [Group(str(s), rates(g)) for s, g in grouped(utterances, lambda u: u.speaker).items()]
    return sorted(groups, key=lambda g: (-_number(g.rates.wer), -g.rates.ref_words, g.label))


def confidence_bin(confidence: float | None, bins: int = CONFIDENCE_BINS) -> int | None:
    """Bin of a confidence in [0, 1] (1.0 falls in the last bin)."""
    if confidence is None:
        return None
    return min(bins - 1, max(0, int(confidence * bins)))


def by_confidence(
    utterances: Sequence[ScoredUtterance], bins: int = CONFIDENCE_BINS
) -> list[Group]:
    """Rates and mean confidence per confidence bin that holds an utterance, lowest first."""
    groups = grouped(utterances, lambda u: confidence_bin(u.confidence, bins))
    return [
        Group(
            f"{index / bins:.1f}-{(index + 1) / bins:.1f}",
            rates(group),
            sum(u.confidence for u in group) / len(group),  # type: ignore[misc]
        )
        for index, group in groups.items()
    ]


@dataclass(frozen=True)
class Calibration:
    """How well utterance confidence predicts an error-free transcript.

    ``accuracy`` is the fraction of utterances without a word error; ``expected_error`` (ECE) is
    the mean gap between a bin's mean confidence and its accuracy, weighted by its utterances.
    """

    utterances: int
    mean_confidence: float
    accuracy: float
    expected_error: float


def calibration(groups: Sequence[Group]) -> Calibration | None:
    """The summary of :func:`by_confidence`'s bins; ``None`` without confidences."""
    total = sum(g.rates.utterances for g in groups)
    if not total:
        return None
    weight = [g.rates.utterances / total for g in groups]
    accuracy = [1 - g.rates.with_errors / g.rates.utterances for g in groups]
    confidence = [g.mean_confidence or 0.0 for g in groups]
    return Calibration(
        utterances=total,
        mean_confidence=sum(w * c for w, c in zip(weight, confidence, strict=True)),
        accuracy=sum(w * a for w, a in zip(weight, accuracy, strict=True)),
        expected_error=sum(
            w * abs(c - a) for w, c, a in zip(weight, confidence, accuracy, strict=True)
        ),
    )


@dataclass(frozen=True)
class AlignedWord:
    """One step of a word alignment: a word pair (or a lone word) and what happened to it."""

    operation: Operation
    reference: str | None  # None for an insertion
    hypothesis: str | None  # None for a deletion


@dataclass
class ErrorCounts:
    """The words most often substituted (``(reference, hypothesis)``), deleted and inserted."""

    substitutions: Counter[tuple[str, str]] = field(default_factory=Counter)
    deletions: Counter[str] = field(default_factory=Counter)
    insertions: Counter[str] = field(default_factory=Counter)


def align(reference: str, hypothesis: str) -> list[AlignedWord]:
    """The word alignment jiwer scores ``hypothesis`` against ``reference`` by."""
    return _aligned([reference], [hypothesis])[0]


def error_counts(utterances: Sequence[ScoredUtterance]) -> ErrorCounts:
    """Substitutions, deletions and insertions over the scored utterances, from one jiwer
    alignment of them all."""
    scored = [u for u in utterances if u.counts is not None]
    counts = ErrorCounts()
    for words in _aligned([u.reference for u in scored], [u.hypothesis for u in scored]):
        for word in words:
            if word.operation == "substitute":
                counts.substitutions[(word.reference, word.hypothesis)] += 1
            elif word.operation == "delete":
                counts.deletions[word.reference] += 1
            elif word.operation == "insert":
                counts.insertions[word.hypothesis] += 1
    return counts


def worst(utterances: Sequence[ScoredUtterance], count: int) -> list[ScoredUtterance]:
    """The ``count`` scored utterances with the most word errors (then highest WER, then id),
    error-free ones never."""
    wrong = [u for u in utterances if u.counts is not None and u.word_errors > 0]
    return sorted(wrong, key=lambda u: (-u.word_errors, -u.wer, u.id))[:count]


def _aligned(references: list[str], hypotheses: list[str]) -> list[list[AlignedWord]]:
    if not references:
        return []
    output = jiwer.process_words(references, hypotheses)
    aligned = []
    for ref, hyp, chunks in zip(
        output.references, output.hypotheses, output.alignments, strict=True
    ):
        words: list[AlignedWord] = []
        for chunk in chunks:
            refs = ref[chunk.ref_start_idx : chunk.ref_end_idx]
            hyps = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
            if chunk.type in ("equal", "substitute"):
                words += [AlignedWord(chunk.type, r, h) for r, h in zip(refs, hyps, strict=True)]
            elif chunk.type == "delete":
                words += [AlignedWord("delete", r, None) for r in refs]
            else:
                words += [AlignedWord("insert", None, h) for h in hyps]
        aligned.append(words)
    return aligned


def _number(value: float) -> float:
    return -1.0 if math.isnan(value) else value
