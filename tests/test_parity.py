"""One decoding path: every runtime gives the same transcripts of the same real clips.

A tiny Parakeet trained one epoch (4 steps) at a tiny learning rate, so that its head still
emits characters on every clip (a head trained further on 120 clips emits only blanks), is
scored by Lightning ``test``; its Hugging Face folder, ONNX export and SageMaker model dir
transcribe the same AN4 clips through ``transcribe --backend torch``, ``transcribe --backend
onnx``, the server and the SageMaker handler: greedily, and with a word 3-gram LM that travels
with the model.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from asr_lightning.cli import main
from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.sagemaker.model_dir import complete_model_dir
from asr_lightning.serve.app import ServingApp
from asr_lightning.serve.loading import load_transcriber
from asr_lightning.training.lightning_cli import best_checkpoint_of
from tests.training_support import QUICKSTART, REPO_ROOT, load_handler, run_dirs, tiny_config

pytestmark = pytest.mark.slow
AN4_SPEAKER = "an4/wav/an4test_clstk/fcaw"


def _cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["asr-lightning", *args])
    return main()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """``(config, best checkpoint, hf_model, manifest of 8 AN4 clips, LM)``."""
    root = tmp_path_factory.mktemp("parity")
    clips = sorted((shared_data / AN4_SPEAKER).glob("*.sph"))[:8]
    transcripts = {
        line.rsplit("(", 1)[1].rstrip(")\n"): line.rsplit("(", 1)[0].strip()
        for line in (shared_data / "an4/etc/an4_test.transcription").read_text().splitlines()
    }
    manifest = root / "an4.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio_filepath": str(c), "text": transcripts[c.stem], "id": c.stem}) + "\n"
            for c in clips
        )
    )
    config = tiny_config(
        root,
        train=16,
        evaluation=8,
        trainer={"max_steps": 4},
        model={"learning_rate": 1e-5},
        data={"test": str(manifest), "predict": str(manifest)},
    )
    with pytest.MonkeyPatch.context() as patch:
        assert _cli(patch, "fit", "--config", str(config)) == 0
    run = run_dirs(root)[-1]
    texts = [
        json.loads(line)["text"] for line in (QUICKSTART / "train.jsonl").read_text().splitlines()
    ]
    lm = write_arpa(root / "quickstart_3gram.arpa", *kneser_ney(texts, order=3))
    best = best_checkpoint_of(run / "checkpoints" / "last.ckpt")
    return config, best, run / "hf_model", manifest, Path(lm)


def _lightning_test(monkeypatch, config, checkpoint, out, *decoding) -> dict[str, str]:
    args = ["test", "--config", str(config), "--ckpt_path", str(checkpoint), *decoding]
    args += ["--trainer.logger.init_args.save_dir", str(out)]
    assert _cli(monkeypatch, *args) == 0
    (jsonl,) = out.glob("**/predictions/test_test.jsonl")
    return {row["id"]: row["hypothesis"] for row in map(json.loads, jsonl.read_text().splitlines())}


def _transcribe(monkeypatch, capsys, model, clips, *options) -> dict[str, str]:
    capsys.readouterr()
    assert _cli(monkeypatch, "transcribe", str(model), *map(str, clips), "--json", *options) == 0
    return {Path(r["source"]).stem: r["text"] for r in json.loads(capsys.readouterr().out)}


@pytest.mark.parametrize("with_lm", [False, True], ids=["greedy", "lm"])
def test_every_runtime_gives_the_same_transcripts(trained, with_lm, tmp_path, monkeypatch, capsys):
    config, checkpoint, hf_model, manifest, lm = trained
    clips = [Path(json.loads(line)["audio_filepath"]) for line in manifest.read_text().splitlines()]
    decoding = ["--decoding.lm", str(lm)] if with_lm else []

    scored = _lightning_test(monkeypatch, config, checkpoint, tmp_path / "test", *decoding)
    assert sum(bool(text) for text in scored.values()) >= 6  # the model emits words

    torch_texts = _transcribe(monkeypatch, capsys, hf_model, clips, "--backend", "torch", *decoding)
    # the ONNX folder carries the LM itself: no --decoding flag for it, nor for what follows
    assert (
        _cli(monkeypatch, "export", str(hf_model), "--output", str(tmp_path / "onnx"), *decoding)
        == 0
    )
    onnx_texts = _transcribe(monkeypatch, capsys, tmp_path / "onnx", clips)

    model_dir = tmp_path / "model_dir"
    shutil.copytree(hf_model, model_dir / "hf_model")
    shutil.copytree(tmp_path / "onnx", model_dir / "onnx")
    complete_model_dir(model_dir, REPO_ROOT, onnx=False)
    app = ServingApp(load_transcriber(model_dir))
    try:
        served = {
            clip.stem: app.invoke(clip.read_bytes(), "application/octet-stream", None, None)[1][
                "text"
            ]
            for clip in clips
        }
    finally:
        app.close()
    handler = load_handler(model_dir)
    endpoint = handler.model_fn(str(model_dir))
    assert endpoint.decoding.beam == with_lm and bool(endpoint.decoding.lm) == with_lm
    handled = {
        clip.stem: handler.predict_fn(
            handler.input_fn(clip.read_bytes(), "application/octet-stream"), endpoint
        )["text"]
        for clip in clips
    }

    assert torch_texts == scored
    assert onnx_texts == scored
    assert served == scored
    assert handled == scored
    if with_lm:  # the LM decides: an explicit greedy override of the folder's LM changes texts
        greedy = _transcribe(
            monkeypatch, capsys, tmp_path / "onnx", clips, "--decoding.method", "greedy"
        )
        assert greedy != scored
