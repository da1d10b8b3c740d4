"""Filters: every dropped utterance is counted under exactly one reason."""

from __future__ import annotations

import pytest

from asr_lightning.data.filters import (
    CTC_INFEASIBLE,
    EMPTY_TRANSCRIPT,
    MAX_EXAMPLES,
    TOO_LONG,
    TOO_SHORT,
    FilterReport,
    FilterRules,
    KeptItem,
    ctc_frames_needed,
    filter_utterances,
)
from asr_lightning.data.sources import Utterance
from asr_lightning.errors import AudioDecodeError, ConfigError
from asr_lightning.text.normalize import TextNormalizer

NORMALIZE = TextNormalizer(vocabulary=frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'"))


def _utt(uid: str, text: str = "HELLO") -> Utterance:
    return Utterance(id=uid, audio=f"/data/{uid}.wav", text=text)


def test_each_reason_is_counted_once_in_order() -> None:
    bad = AudioDecodeError("/data/bad.wav", {"soundfile": "Error opening '/data/bad.wav': junk"})
    cases = [
        (_utt("ok", "Hello, world!"), 2.0),
        (_utt("bad"), bad),
        (_utt("short", ""), 0.5),  # too short wins over the empty transcript
        (_utt("long"), 20.0),
        (_utt("empty", "?! 123"), 2.0),
        (_utt("edge-min"), 1.0),
        (_utt("edge-max"), 18.0),
    ]
    kept, report = filter_utterances(
        [u for u, _ in cases], [d for _, d in cases], FilterRules(), NORMALIZE
    )
    assert kept[0] == KeptItem(cases[0][0], 2.0, "HELLO WORLD")
    assert [k.utterance.id for k in kept] == ["ok", "edge-min", "edge-max"]
    assert dict(report.dropped) == {
        "decode failed: Error opening '<file>': junk": 1,
        TOO_SHORT: 1,
        TOO_LONG: 1,
        EMPTY_TRANSCRIPT: 1,
    }
    assert report.examples[EMPTY_TRANSCRIPT] == ["empty"]
    assert (report.total, report.kept, report.dropped_total) == (7, 3, 4)
    assert report.summary().startswith("kept 3 of 7 (42.9%); dropped 4: ")


def test_ctc_infeasible_counts_repeated_labels() -> None:
    # 4 frames at 4 frames/s for 1 s: "ABCD" fits, "ABBA" needs 5 (a blank between the Bs).
    rules = FilterRules(min_duration_s=0.0, output_frames_per_second=4.0)
    utts = [_utt("fits", "ABCD"), _utt("repeat", "ABBA"), _utt("long", "ABCDE")]
    kept, report = filter_utterances(utts, [1.0, 1.0, 1.0], rules, NORMALIZE)
    assert [k.utterance.id for k in kept] == ["fits"]
    assert report.dropped == {CTC_INFEASIBLE: 2}
    assert ctc_frames_needed("ABBA") == 5 and ctc_frames_needed([7, 7, 7]) == 5


def test_label_length_callable_int_or_labels() -> None:
    rules = FilterRules(min_duration_s=0.0, output_frames_per_second=10.0)  # 10 frames in 1 s

    def kept(label_length) -> bool:
        items, _ = filter_utterances([_utt("a", "AB AB")], [1.0], rules, NORMALIZE, label_length)
        return bool(items)

    assert kept(lambda text: 10) and not kept(lambda text: 11)  # a count: repeats from the text
    assert kept(lambda text: [1, 2] * 5)  # labels: 10 frames, no repeats
    assert not kept(lambda text: [1] * 6)  # six equal labels need 6 + 5 blanks


def test_no_frame_rate_means_no_ctc_check() -> None:
    kept, report = filter_utterances([_utt("a", "A" * 500)], [1.0], FilterRules(), NORMALIZE)
    assert len(kept) == 1 and report.dropped_total == 0


def test_report_merge_and_examples_are_capped() -> None:
    first, second = FilterReport(total=3, kept=1), FilterReport(total=10, kept=2)
    for i in range(2):
        first.drop(TOO_SHORT, f"a{i}")
    for i in range(8):
        second.drop(TOO_SHORT, f"b{i}")
    merged = first.merge(second)
    assert (merged.total, merged.kept, merged.dropped[TOO_SHORT]) == (13, 3, 10)
    assert merged.examples[TOO_SHORT] == ["a0", "a1", "b0", "b1", "b2"][:MAX_EXAMPLES]
    assert merged.to_dict()["dropped"] == {TOO_SHORT: 10}


def test_rules_are_validated() -> None:
    with pytest.raises(ConfigError):
        FilterRules(min_duration_s=5.0, max_duration_s=1.0)
    with pytest.raises(ConfigError):
        FilterRules(output_frames_per_second=0.0)
    FilterRules(min_duration_s=0.0, max_duration_s=float("inf"))  # no limits is fine
    with pytest.raises(ValueError, match="one duration per utterance"):
        filter_utterances([_utt("a")], [], FilterRules(), NORMALIZE)
