"""KenLM (the ``lm`` extra's ``kenlm`` package) scores like our ARPA reader, ARPA or binary.

``scripts/bootstrap.sh`` (run by ``scripts/test.sh``) installs ``kenlm`` and compiles KenLM's
``build_binary`` into ``.venv/bin``; ``$KENLM_BUILD_BINARY`` points elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr_lightning.decoding.lm import BOS, EOS, ArpaLM, KenLMModel, load_lm
from asr_lightning.decoding.ngram import kneser_ney, write_arpa

TEXTS = [
    "GO LEFT",
    "GO RIGHT NOW",
    "ENTER TWO NINE EIGHT ONE",
    "RUBOUT G M E F THREE NINE",
    "ENTER SIX TWO FOUR",
    "STOP",
    "GO LEFT NOW",
    "NINE EIGHT SEVEN",
]
#: (context, word) pairs over the corpus' words: seen n-grams, back-offs, sentence ends.
CASES = [
    ((BOS,), "GO"),
    ((BOS,), "NINE"),
    ((BOS, "GO"), "LEFT"),
    (("GO", "LEFT"), "NOW"),
    (("GO", "LEFT"), EOS),
    (("TWO", "NINE"), "EIGHT"),
    (("EIGHT", "SEVEN"), "GO"),
    (("STOP",), "ENTER"),
    ((BOS, "ENTER"), "SIX"),
    (("LEFT",), "RIGHT"),
]


@pytest.fixture()
def arpa(tmp_path) -> Path:
    return write_arpa(tmp_path / "an4.arpa", *kneser_ney(TEXTS, 3))


def _assert_same_scores(ours: ArpaLM, theirs: KenLMModel) -> None:
    for context, word in CASES:
        assert theirs.score(context, word) == pytest.approx(ours.score(context, word), abs=1e-4)


def test_kenlm_reads_our_arpa_as_our_reader_does(arpa):
    _assert_same_scores(ArpaLM.read(arpa), KenLMModel(arpa))


def test_a_binary_model_goes_through_kenlm_and_scores_like_its_arpa(arpa, tmp_path):
    beside_python = Path(sys.executable).parent / "build_binary"  # where bootstrap puts it
    tool = os.environ.get("KENLM_BUILD_BINARY") or shutil.which("build_binary") or beside_python
    assert Path(tool).is_file(), (
        "no build_binary: run scripts/bootstrap.sh or set KENLM_BUILD_BINARY"
    )
    binary = tmp_path / "an4.binary"
    subprocess.run([tool, str(arpa), str(binary)], check=True, capture_output=True)
    lm = load_lm(binary)
    assert isinstance(lm, KenLMModel) and lm.order == 3
    _assert_same_scores(ArpaLM.read(arpa), lm)
