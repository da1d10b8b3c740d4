"""``asr-lightning export`` and ``asr-lightning transcribe`` end to end on a tiny model."""

from __future__ import annotations

import json

from asr_lightning.cli import main
from tests.model.tiny import scratch_module

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
