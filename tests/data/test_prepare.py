"""Manifests for AN4 and FSDD, written from the real corpora."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asr_lightning.data.prepare import DIGIT_WORDS, prepare_an4, prepare_fsdd
from asr_lightning.data.sources import load_source
from asr_lightning.errors import DataSourceError


@pytest.fixture(scope="module")
def an4_manifests(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_an4(shared_data / "an4", tmp_path_factory.mktemp("an4"))


@pytest.fixture(scope="module")
def fsdd_manifests(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_fsdd(shared_data / "fsdd", tmp_path_factory.mktemp("fsdd"))


def test_an4_splits_speakers_and_transcripts(an4_manifests: dict[str, Path]) -> None:
    train, test = (load_source(str(an4_manifests[s])) for s in ("train", "test"))
    assert (len(train), len(test)) == (948, 130)
    train_speakers, test_speakers = {u.speaker for u in train}, {u.speaker for u in test}
    assert (len(train_speakers), len(test_speakers)) == (74, 10)
    assert not train_speakers & test_speakers
    assert all("<s>" not in u.text and "</s>" not in u.text and "(" not in u.text for u in train)
    first = next(u for u in train if u.id == "an251-fash-b")
    assert (first.text, first.speaker) == ("YES", "fash")
    assert first.audio.endswith("wav/an4_clstk/fash/an251-fash-b.sph")
    assert Path(first.audio).is_absolute() and Path(first.audio).is_file()
    assert next(u for u in test if u.id == "an407-fcaw-b").text == "ERASE C Q Q F SEVEN"
    hours = [sum(u.duration for u in split) / 3600 for split in (train, test)]
    assert hours == [pytest.approx(0.71, abs=0.01), pytest.approx(0.10, abs=0.01)]


def test_manifests_are_sorted_and_reproducible(
    an4_manifests: dict[str, Path], shared_data: Path, tmp_path: Path
) -> None:
    lines = an4_manifests["test"].read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == sorted(ids)
    assert set(json.loads(lines[0])) == {"audio_filepath", "text", "duration", "speaker", "id"}
    again = prepare_an4(shared_data / "an4", tmp_path)
    assert again["test"].read_bytes() == an4_manifests["test"].read_bytes()


def test_fsdd_takes_zero_to_four_are_the_test_split(fsdd_manifests: dict[str, Path]) -> None:
    train, test = (load_source(str(fsdd_manifests[s])) for s in ("train", "test"))
    assert (len(train), len(test)) == (2700, 300)
    assert {int(u.id.rsplit("_", 1)[1]) for u in test} == {0, 1, 2, 3, 4}
    assert min(int(u.id.rsplit("_", 1)[1]) for u in train) == 5
    assert len({u.speaker for u in test}) == len({u.speaker for u in train}) == 6
    assert {u.text for u in test} == set(DIGIT_WORDS)
    seven = next(u for u in test if u.id.startswith("7_"))
    assert seven.text == "SEVEN" and 0.1 < seven.duration < 2.5


def _fake_an4(root: Path, wav: Path, train_line: str) -> Path:
    (root / "etc").mkdir(parents=True)
    for split, folder, line, uid in (
        ("train", "an4_clstk", train_line, "an1-mxyz-b"),
        ("test", "an4test_clstk", "HELLO (an9-mxyz-b)", "an9-mxyz-b"),
    ):
        (root / "wav" / folder / "mxyz").mkdir(parents=True)
        shutil.copy(wav, root / "wav" / folder / "mxyz" / f"{uid}.sph")
        (root / "etc" / f"an4_{split}.transcription").write_text(line + "\n")
        (root / "etc" / f"an4_{split}.fileids").write_text(f"{folder}/mxyz/{uid}\n")
    return root


def test_an4_layout_errors_name_the_file(shared_data: Path, tmp_path: Path) -> None:
    wav = next((shared_data / "fsdd" / "recordings").glob("*.wav"))
    ok = _fake_an4(tmp_path / "ok", wav, "<s> TWO  WORDS </s> (an1-mxyz-b)")
    (utt,) = load_source(str(prepare_an4(ok, tmp_path / "out")["train"]))
    assert utt.text == "TWO WORDS"
    bad = _fake_an4(tmp_path / "bad", wav, "<s> NO ID </s>")
    with pytest.raises(DataSourceError, match=r"an4_train\.transcription:1"):
        prepare_an4(bad, tmp_path / "out2")
    with pytest.raises(DataSourceError, match="an4_sphere"):
        prepare_an4(tmp_path / "nothing", tmp_path / "out3")
    with pytest.raises(DataSourceError, match="recordings"):
        prepare_fsdd(tmp_path / "nothing", tmp_path / "out4")
