"""``asr-lightning export`` and ``asr-lightning transcribe`` end to end on a tiny model."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from asr_lightning.cli import main
from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.sagemaker.model_dir import complete_model_dir
from asr_lightning.serve.app import ServingApp
from asr_lightning.serve.loading import load_transcriber
from tests.model import tiny
from tests.model.tiny import scratch_module
from tests.training_support import REPO_ROOT, load_handler, run_dirs, tiny_config

AN4_SPEAKER = "an4/wav/an4test_clstk/fcaw"


def test_export_then_transcribe(tmp_path, shared_data, capsys):
    scratch_module("parakeet_ctc").save_hf(tmp_path / "hf")
    clips = sorted((shared_data / AN4_SPEAKER).glob("*.sph"))[:3]
    code = main(
        [
            "export",
            str(tmp_path / "hf"),
            "--output",
            str(tmp_path / "onnx"),
            "--quantize",
            "int8",
            "--check-audio",
            *map(str, clips),
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [c["file"] for c in report["checks"]] == ["model.onnx", "model.int8.onnx"]
    assert report["checks"][0]["same_transcripts"] == 3

    folder_glob = str(shared_data / AN4_SPEAKER / "an40*.sph")
    code = main(
        [
            "transcribe",
            str(tmp_path / "onnx"),
            folder_glob,
            str(tmp_path / "missing.wav"),
            "--onnx-file",
            "model.int8.onnx",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 1  # one input failed, the others are transcribed
    assert len(results) == len(list((shared_data / AN4_SPEAKER).glob("an40*.sph"))) + 1
    assert results[-1]["error"] and "missing.wav: error" in captured.err
    assert all(r["error"] is None and r["duration_s"] > 0 for r in results[:-1])


def test_transcribe_plain_text_from_a_folder(tmp_path, shared_data, capsys):
    scratch_module("parakeet_ctc").save_hf(tmp_path / "hf")
    code = main(["transcribe", str(tmp_path / "hf"), str(shared_data / AN4_SPEAKER)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == len(list((shared_data / AN4_SPEAKER).glob("*.sph")))
    assert all(line.split("\t")[0].endswith(".sph") for line in lines)


def test_a_tokenizer_less_fine_tune_runs_on_every_runtime(tmp_path, shared_data, capsys):
    """The hf_model of a fine-tuned wav2vec2-base-like encoder (group norm, no tokenizer, no
    head) in export, transcribe (torch and ONNX), the server's app and the SageMaker handler."""
    tiny.save_encoder_folder("wav2vec2", tmp_path / "encoder")  # group norm, like the base
    model = {"model_name_or_path": str(tmp_path / "encoder"), "model_type": None}
    config = tiny_config(
        tmp_path, train=12, evaluation=4, model={**model, "config_overrides": None},
        trainer={"max_steps": 2},
    )  # fmt: skip
    argv = sys.argv
    sys.argv = ["asr-lightning", "fit", "--config", str(config)]
    try:
        assert main() == 0
    finally:
        sys.argv = argv
    hf_model = run_dirs(tmp_path)[-1] / "hf_model"
    clips = sorted((shared_data / AN4_SPEAKER).glob("*.sph"))[:2]
    transcripts = Transcriber.from_pretrained(hf_model).transcribe(clips)
    expected = [t.text for t in transcripts]
    assert any(expected)  # a random head still emits characters

    capsys.readouterr()
    check = ["--check-audio", *map(str, clips), "--json"]
    assert main(["export", str(hf_model), "--output", str(tmp_path / "onnx"), *check]) == 0
    assert json.loads(capsys.readouterr().out)["checks"][0]["same_transcripts"] == 2
    assert main(["transcribe", str(tmp_path / "onnx"), *map(str, clips), "--json"]) == 0
    assert [r["text"] for r in json.loads(capsys.readouterr().out)] == expected

    model_dir = tmp_path / "sm_model"
    shutil.copytree(hf_model, model_dir / "hf_model")
    complete_model_dir(model_dir, REPO_ROOT)
    app = ServingApp(load_transcriber(model_dir))
    try:
        for clip, transcript in zip(clips, transcripts, strict=True):
            status, answer = app.invoke(clip.read_bytes(), "application/octet-stream", None, None)
            assert (status, answer["text"]) == (200, transcript.text)
            # the served ONNX model's posteriors equal PyTorch's to export tolerance
            assert answer["confidence"] == pytest.approx(transcript.confidence, abs=1e-3)
    finally:
        app.close()
    handler = load_handler(model_dir)
    served = handler.model_fn(str(model_dir))
    assert served.backend.name == "onnx"
    for clip, text in zip(clips, expected, strict=True):
        data = handler.input_fn(clip.read_bytes(), "application/octet-stream", None)
        assert handler.predict_fn(data, served)["text"] == text
