"""Report statistics: rates as the logged metrics count them, alignment counts, groupings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from torchmetrics.text import CharErrorRate, WordErrorRate

from asr_lightning.model.metrics import utterance_errors
from asr_lightning.report.records import ScoredUtterance, read_predictions
from asr_lightning.report.stats import (
    AlignedWord,
    Group,
    Rates,
    align,
    bucket_label,
    by_confidence,
    by_duration,
    by_speaker,
    calibration,
    confidence_bin,
    duration_bucket,
    error_counts,
    rates,
    worst,
)


def utterance(uid: str, reference: str, hypothesis: str, **fields) -> ScoredUtterance:
    counts = utterance_errors(reference, hypothesis)
    return ScoredUtterance(uid, reference, hypothesis, counts, **fields)


def test_set_rates_are_the_torchmetrics_rates_the_run_logs(an4_predictions: Path):
    scored = read_predictions(an4_predictions).scored
    total = rates(scored)
    references, hypotheses = [u.reference for u in scored], [u.hypothesis for u in scored]
    assert total.wer == pytest.approx(float(WordErrorRate()(hypotheses, references)), rel=1e-6)
    assert total.cer == pytest.approx(float(CharErrorRate()(hypotheses, references)), rel=1e-6)
    assert total.utterances == len(scored) and 0 < total.with_errors < len(scored)
    counts = error_counts(scored)
    edits = sum(counts.substitutions.values()) + sum(counts.deletions.values())
    assert edits + sum(counts.insertions.values()) == total.word_errors


def test_alignment_marks_each_word_and_counts_the_commonest_errors():
    assert align("A B C", "A X C D") == [
        AlignedWord("equal", "A", "A"),
        AlignedWord("substitute", "B", "X"),
        AlignedWord("equal", "C", "C"),
        AlignedWord("insert", None, "D"),
    ]
    assert align("HELP STOP", "") == [
        AlignedWord("delete", "HELP", None), AlignedWord("delete", "STOP", None),
    ]  # fmt: skip
    utterances = [
        utterance("a", "ONE TWO", "ONE TO"),
        utterance("b", "TWO THREE", "TO THREE THE"),
        utterance("c", "FOUR", ""),
        utterance("d", "", "UH"),  # no reference words: insertions only
        ScoredUtterance("e", "FIVE", "", None, unreadable="x"),  # excluded: not counted
    ]
    counts = error_counts(utterances)
    assert counts.substitutions.most_common() == [(("TWO", "TO"), 2)]
    assert dict(counts.deletions) == {"FOUR": 1}
    assert dict(counts.insertions) == {"THE": 1, "UH": 1}
    assert error_counts([]).substitutions == {}


def test_a_group_without_reference_words_has_no_rate():
    empty = rates([utterance("d", "", "UH")])
    assert empty.word_errors == 1 and math.isnan(empty.wer) and math.isnan(Rates().cer)


def test_durations_fall_in_power_of_two_buckets():
    assert [duration_bucket(s) for s in (0.2, 1.0, 3.9, 4.0, 31.9, 32.0, 600.0)] == [
        0, 1, 2, 3, 5, 6, 6,
    ]  # fmt: skip
    assert duration_bucket(None) is None
    assert (bucket_label(0), bucket_label(2), bucket_label(6)) == ("0-1 s", "2-4 s", ">= 32 s")
    groups = by_duration([
        utterance("a", "A B", "A", duration_s=3.0), utterance("b", "A B", "A B", duration_s=2.5),
        utterance("c", "A", "B", duration_s=0.5), utterance("d", "A", "B"),  # no duration
    ])  # fmt: skip
    assert [(g.label, g.rates.utterances, g.rates.wer) for g in groups] == [
        ("0-1 s", 1, 1.0), ("2-4 s", 2, 0.25),
    ]  # fmt: skip


def test_speakers_are_ordered_by_wer_and_confidences_binned_and_summarised():
    utterances = [
        utterance("a", "A B", "A B", speaker="s1", confidence=0.95),
        utterance("b", "A B", "A", speaker="s2", confidence=0.91),
        utterance("c", "A B C D", "A X", speaker="s1", confidence=0.15),
        utterance("d", "A", "A", speaker=None, confidence=1.0),
        utterance("e", "A", "B", speaker="s3"),  # no confidence: not binned
    ]
    assert [(g.label, g.rates.wer) for g in by_speaker(utterances)] == [
        ("s3", 1.0),
        ("s1", 0.5),
        ("s2", 0.5),
    ]  # fmt: skip (at equal WER, the speaker with more words first)
    assert [confidence_bin(c) for c in (0.0, 0.05, 0.1, 0.99, 1.0)] == [0, 0, 1, 9, 9]
    groups = by_confidence(utterances)
    assert [(g.label, g.rates.utterances) for g in groups] == [("0.1-0.2", 1), ("0.9-1.0", 3)]
    assert groups[1].mean_confidence == pytest.approx((0.95 + 0.91 + 1.0) / 3)
    summary = calibration(groups)
    # bin 0.1-0.2: confidence 0.15, none error-free; bin 0.9-1.0: 0.953, 2 of 3 error-free
    assert summary.utterances == 4 and summary.accuracy == pytest.approx(0.5)
    assert summary.expected_error == pytest.approx(0.25 * 0.15 + 0.75 * (2.86 / 3 - 2 / 3))
    assert calibration([]) is None
    assert isinstance(groups[0], Group)


def test_the_worst_utterances_have_the_most_errors_and_never_none():
    utterances = [
        utterance("a", "A B C", "A"),  # 2 errors in 3 words
        utterance("b", "A", "B C"),  # 2 errors in 1 word: worse at equal errors
        utterance("c", "A B", "A B"),
        utterance("d", "A B C D", "X B C D"),
    ]
    assert [u.id for u in worst(utterances, 10)] == ["b", "a", "d"]
    assert [u.id for u in worst(utterances, 1)] == ["b"]
