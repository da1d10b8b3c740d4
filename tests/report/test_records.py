"""Reading predictions files: counts as written, and every bad file named with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asr_lightning.errors import DataSourceError
from asr_lightning.model.metrics import utterance_errors
from asr_lightning.report.records import read_predictions, set_name
from tests.report.conftest import write_lines


def test_records_are_read_with_their_counts_as_written(an4_predictions: Path):
    lines = [json.loads(line) for line in an4_predictions.read_text().splitlines()]
    data = read_predictions(an4_predictions)
    assert data.name == "an4" and len(data.utterances) == len(lines) == len(data.scored)
    for utt, line in zip(data.utterances, lines, strict=True):
        assert (utt.id, utt.reference, utt.hypothesis) == (line["id"], line["reference"],
                                                           line["hypothesis"])  # fmt: skip
        assert dict(utt.counts) == {k: line[k] for k in utt.counts}
        assert (utt.duration_s, utt.speaker, utt.audio) == (
            line["duration_s"], line["speaker"], line["audio"],
        )  # fmt: skip


def test_unscored_lines_are_scored_and_excluded_unreadable_ones_left_out(tmp_path: Path):
    path = write_lines(tmp_path / "hand.jsonl", [
        {"id": 1, "reference": "A B C", "hypothesis": "A X C D"},  # written by hand: no counts
        {"id": "gone", "reference": "HELP", "hypothesis": "", "confidence": None,
         "unreadable": "decode failed: x"},  # model.unreadable: exclude
    ])  # fmt: skip
    data = read_predictions(path)
    assert data.name == "hand" and [u.id for u in data.scored] == ["1"]
    assert dict(data.utterances[0].counts) == utterance_errors("A B C", "A X C D")
    assert data.utterances[1].counts is None and data.utterances[1].unreadable


def test_set_names_drop_the_test_prefix():
    assert set_name(Path("run/predictions/test_dev-clean.jsonl")) == "dev-clean"
    assert set_name(Path("test_.jsonl")) == "test_" and set_name(Path("x.jsonl")) == "x"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"id": "a", "reference": "A", "hypothesis": "A"}\n{"id": ', r":2: not JSON"),
        ('["a", "b"]\n', r":1: a JSON list, not an object"),
        ('{"id": "a", "hypothesis": "A"}\n', r":1: no reference field"),
        ('{"id": "a", "reference": 3, "hypothesis": "A"}\n', r":1: reference must be a string"),
        (
            '{"id": "a", "reference": "A", "hypothesis": "A", "word_errors": -1}\n',
            r":1: word_errors must be a count",
        ),
        (
            '{"id": "a", "reference": "A", "hypothesis": "A", "word_errors": 0}\n',
            r":1: ref_words must be a count",
        ),
        (
            '{"id": "a", "reference": "A", "hypothesis": "A", "confidence": "high"}\n',
            r":1: confidence must be a float or null",
        ),
        (
            '{"id": "a", "hypothesis": "", "reference": "A", "unreadable": "x"}\n\n',
            r"no scored utterance \(none of its 1 records",
        ),
        ("", r"no scored utterance \(none of its 0 records"),
    ],
)
def test_a_bad_file_is_named_with_its_line_and_the_fix(tmp_path: Path, content: str, match: str):
    path = tmp_path / "test_bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataSourceError, match=match) as raised:
        read_predictions(path)
    assert str(path) in str(raised.value) and "asr-lightning test" in str(raised.value)


def test_a_missing_or_binary_file_is_a_data_source_error(tmp_path: Path):
    with pytest.raises(DataSourceError, match="no predictions file .*nope.jsonl"):
        read_predictions(tmp_path / "nope.jsonl")
    binary = tmp_path / "test_x.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataSourceError, match="cannot read predictions file"):
        read_predictions(binary)
