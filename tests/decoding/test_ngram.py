"""scripts/build_ngram.py: transcripts -> ARPA spelled like the model's labels."""

from __future__ import annotations

import json
import runpy
import sys

from asr_lightning.decoding.lm import load_lm
from tests.conftest import REPO_ROOT
from tests.model.tiny import scratch_module


def test_build_ngram_from_a_manifest(tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "train.jsonl"
    texts = ["Bad cab!", "a cab", "ABC abc"]
    manifest.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    scratch_module("wav2vec2").save_hf(tmp_path / "hf")  # lower-case vocabulary a, b, c, d
    arpa = tmp_path / "lm.arpa"
    argv = [
        "build_ngram.py",
        str(manifest),
        "--model",
        str(tmp_path / "hf"),
        "--order",
        "2",
        "--output",
        str(arpa),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        runpy.run_path(str(REPO_ROOT / "scripts" / "build_ngram.py"), run_name="__main__")
    except SystemExit as done:
        assert done.code == 0
    assert "3 transcripts" in capsys.readouterr().out
    lm = load_lm(arpa)
    unigrams = {ngram[0] for ngram in lm.probs if len(ngram) == 1}
    assert {"bad", "cab", "a", "abc"} <= unigrams and "Bad" not in unigrams
    assert lm.score(("a",), "cab") > lm.score(("a",), "bad")  # "a cab" was seen, "a bad" not
