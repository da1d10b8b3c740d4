"""Predictions of real AN4 test utterances: references, durations, speakers and files from the
corpus, hypotheses with seeded substitutions, deletions and insertions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from asr_lightning.data.prepare import prepare_an4
from asr_lightning.model.metrics import utterance_errors

#: Utterances of the AN4 test set in the fixture.
UTTERANCES = 60


def corrupt(reference: str, rng: random.Random) -> str:
    """A hypothesis with some words substituted, dropped or added."""
    words = []
    for word in reference.split():
        roll = rng.random()
        if roll < 0.12:
            words.append(rng.choice(["TWO", "NO", "A", "ENTER"]))
        elif roll >= 0.94:
            continue
        else:
            words.append(word)
    if rng.random() < 0.15:
        words.append("THE")
    return " ".join(words)


def prediction_records(manifest: Path, count: int = UTTERANCES) -> list[dict]:
    """Records as ``asr-lightning test`` writes them, for the first ``count`` lines."""
    rng = random.Random(7)
    records = []
    for line in manifest.read_text(encoding="utf-8").splitlines()[:count]:
        row = json.loads(line)
        hypothesis = corrupt(row["text"], rng)
        records.append({
            "id": row["id"], "hypothesis": hypothesis, "confidence": round(rng.random(), 4),
            "reference": row["text"], **utterance_errors(row["text"], hypothesis),
            "duration_s": row["duration"], "speaker": row["speaker"],
            "audio": row["audio_filepath"],
        })  # fmt: skip
    return records


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def an4_manifest(shared_data: Path, tmp_path_factory) -> Path:
    """The AN4 test manifest (absolute paths, durations from the headers, speakers)."""
    return prepare_an4(shared_data / "an4", tmp_path_factory.mktemp("an4"))["test"]


@pytest.fixture
def an4_predictions(an4_manifest: Path, tmp_path: Path) -> Path:
    """``test_an4.jsonl`` of :data:`UTTERANCES` corrupted AN4 test utterances."""
    return write_lines(tmp_path / "test_an4.jsonl", prediction_records(an4_manifest))
