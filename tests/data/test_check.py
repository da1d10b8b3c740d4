"""``check_source``: one scan of a dataset, and the report a user reads before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lightning.data import durations
from asr_lightning.data.check import DataReport, check_source, duration_histogram
from asr_lightning.data.durations import DurationCache, measure_durations
from asr_lightning.data.filters import TOO_LONG, TOO_SHORT, FilterRules
from asr_lightning.data.prepare import prepare_an4
from asr_lightning.data.sources import Utterance, load_source
from tests.fixtures.bad_audio import make_bad_audio_corpus

RATE = 16_000
LETTERS = {c: i for i, c in enumerate(["<pad>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ"])}


def _tone(path: Path, seconds: float, peak: float = 0.5) -> str:
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (peak * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE)
    return str(path)


@pytest.fixture(scope="module")
def an4_train(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Utterance]:
    manifests = prepare_an4(shared_data / "an4", tmp_path_factory.mktemp("an4"))
    return load_source(str(manifests["train"]))


def test_an4_train_report(
    an4_train: list[Utterance], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DurationCache(tmp_path / "durations.sqlite")
    report = check_source(an4_train, cache=cache, vocabulary=LETTERS)
    assert report.utterances == 948 and report.speakers == 74
    assert report.hours == pytest.approx(0.71, abs=0.01)
    assert report.decoded and report.decode_failures == {}
    assert sum(report.histogram.values()) == 948
    short = sum(1 for u in an4_train if u.duration < 1.0)
    assert report.filter.dropped == {TOO_SHORT: short}
    assert report.filter.kept == 948 - short
    assert report.oov_characters == {}  # AN4 is upper-case letters and spaces only
    assert set(report.characters) == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert not report.duration_mismatches  # manifest durations agree with the audio
    assert 0.1 < report.median_peak < 0.3  # quiet, as the corpus notes say
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["utterances"] == 948 and as_json["kept_utterances"] == 948 - short
    text = report.render()
    assert "utterances: 948 from 74 speakers, 0.71 h" in text and "quiet" in text

    # Training reads the durations check measured: the decoder is not asked again.
    def fail(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(durations, "audio_duration", fail)
    again = measure_durations(an4_train, cache, verify=True)
    assert sum(again) == pytest.approx(report.seconds)


def test_every_bad_file_is_decoded_or_reported(tmp_path: Path) -> None:
    cases = make_bad_audio_corpus(tmp_path)
    utts = [Utterance(name, str(case.path), "HELLO") for name, case in cases.items()]
    rules = FilterRules(min_duration_s=0.0, max_duration_s=1000.0)
    report = check_source(utts, rules=rules)  # must not raise
    failed = {f for files in report.decode_failures.values() for f in files}
    for name, case in cases.items():
        assert (str(case.path) in failed) != case.decodes, name
    assert report.filter.kept == sum(case.decodes for case in cases.values())
    reasons = dict(report.filter.dropped)
    assert reasons["decode failed: NaN or infinite samples"] == 2
    assert all(r.startswith("decode failed: ") for r in reasons)
    assert str(cases["random_bytes"].path) not in " ".join(report.decode_failures)
    report.render()

    # Headers alone miss what only decoding finds (NaN samples behind a valid header).
    headers = check_source(utts, rules=rules, decode=False)
    header_failed = {f for files in headers.decode_failures.values() for f in files}
    assert str(cases["nan_samples"].path) not in header_failed
    assert header_failed < failed and "run without --no-decode" in headers.render()


def test_characters_outside_the_vocabulary(tmp_path: Path) -> None:
    audio = _tone(tmp_path / "a.wav", 1.5)
    utts = [
        Utterance("1", audio, "Room 101, café!"),
        Utterance("2", audio, "ÑANDÚ Ж"),
        Utterance("3", audio, "..."),
    ]
    report = check_source(utts, vocabulary=LETTERS, decode=False)
    assert report.oov_characters == {"1": 2, "0": 1, "Ж": 1}  # É, Ñ, Ú fold to E, N, U
    assert report.filter.dropped == {"empty transcript after normalization": 1}
    assert "characters outside the vocabulary (3)" in report.render()
    inventory = check_source(utts, decode=False)  # no vocabulary: the inventory only
    assert inventory.oov_characters is None
    assert inventory.characters["1"] == 2 and inventory.characters["é"] == 1


def test_duration_mismatch_silence_and_source_skips(tmp_path: Path) -> None:
    utts = [
        Utterance("stated-wrong", _tone(tmp_path / "a.wav", 2.0), "A B", duration=3.0),
        Utterance("silent", _tone(tmp_path / "s.wav", 1.5, peak=0.0), "A"),
        Utterance("long", _tone(tmp_path / "l.wav", 19.0), "A"),
    ]
    report = check_source(
        utts, skipped_at_load={"clip missing": ["gone.mp3"]}, cache=DurationCache(None)
    )
    assert report.duration_mismatches == [("stated-wrong", 3.0, 2.0)]
    assert report.silent == [str(tmp_path / "s.wav")]
    assert report.filter.dropped == {TOO_LONG: 1}
    assert report.longest_s == pytest.approx(19.0)
    text = report.render()
    for expected in ("stated durations off", "silent files: 1", "clip missing: 1: gone.mp3"):
        assert expected in text
    assert isinstance(report, DataReport) and report.to_dict()["skipped_at_load"]


def test_duration_histogram_bins() -> None:
    counts = duration_histogram([0.0, 0.99, 1.0, 4.9, 17.9, 18.0, 29.0, 31.0, 600.0])
    assert counts == {
        "0-1 s": 2,
        "1-2 s": 1,
        "2-5 s": 1,
        "5-10 s": 0,
        "10-18 s": 1,
        "18-30 s": 2,
        ">30 s": 2,
    }
