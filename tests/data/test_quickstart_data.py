"""The quickstart corpus shipped in data/quickstart (made by scripts/make_quickstart_data.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

CORPUS = Path(__file__).resolve().parents[2] / "data" / "quickstart"
SPLITS = ("train", "validation", "test")
SAMPLE_RATE = 16_000
MAX_CORPUS_BYTES = 10 * 1024 * 1024
DURATION_TOLERANCE_S = 0.05
FIELDS = {"audio_filepath", "text", "duration", "speaker", "id"}


def read_manifest(split: str) -> list[dict]:
    lines = (CORPUS / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict]]:
    return {split: read_manifest(split) for split in SPLITS}


def test_manifests_have_the_contract_fields(manifests: dict[str, list[dict]]) -> None:
    for split, rows in manifests.items():
        assert rows, f"{split}.jsonl is empty"
        for row in rows:
            assert set(row) == FIELDS, row
            assert not Path(row["audio_filepath"]).is_absolute(), row
            assert row["text"] == row["text"].upper() == " ".join(row["text"].split()), row
            assert 1 <= len(row["text"].split()) <= 5, row
    ids = [row["id"] for rows in manifests.values() for row in rows]
    assert len(ids) == len(set(ids)), "ids repeat across the manifests"


def test_voices_are_disjoint_between_splits(manifests: dict[str, list[dict]]) -> None:
    voices = {split: {row["speaker"] for row in rows} for split, rows in manifests.items()}
    variants = {split: {v.split("+")[-1] for v in vs} for split, vs in voices.items()}
    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not voices[first] & voices[second], (first, second)
        assert not variants[first] & variants[second], (first, second)


def test_every_clip_decodes_at_16k_with_the_manifest_duration(
    manifests: dict[str, list[dict]],
) -> None:
    for rows in manifests.values():
        for row in rows:
            samples, rate = sf.read(CORPUS / row["audio_filepath"], dtype="float32")
            assert rate == SAMPLE_RATE, row
            assert samples.ndim == 1, row
            assert abs(len(samples) / rate - row["duration"]) <= DURATION_TOLERANCE_S, row
            assert 0.5 <= row["duration"] <= 5.0, row
            assert 0.01 < float(abs(samples).max()) <= 1.0, row


def test_corpus_holds_exactly_the_referenced_files(manifests: dict[str, list[dict]]) -> None:
    expected = {"README.md", *(f"{split}.jsonl" for split in SPLITS)}
    expected |= {row["audio_filepath"] for rows in manifests.values() for row in rows}
    present = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    assert present - expected == set(), "files no manifest references"
    assert expected - present == set(), "files the manifests reference but are missing"


def test_corpus_fits_the_size_budget() -> None:
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total < MAX_CORPUS_BYTES, f"data/quickstart is {total / 1e6:.1f} MB"
