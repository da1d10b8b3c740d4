"""The ONNX export callback writes a checked ONNX folder at the end of fit."""

from __future__ import annotations

from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.training.callbacks import ONNXExport
from tests.conftest import REPO_ROOT
from tests.model.tiny import batch_of, loader, scratch_module, trainer

CLIP = REPO_ROOT / "data" / "quickstart" / "audio" / "test-00000.opus"


def test_fit_ends_with_an_onnx_folder(tmp_path):
    module = scratch_module("wav2vec2")
    callback = ONNXExport(dirpath=str(tmp_path / "onnx"), check_audio=[str(CLIP)])
    fit = trainer(tmp_path, max_steps=2, callbacks=[callback], limit_val_batches=0)
    fit.fit(module, train_dataloaders=loader(batch_of(module, [1.0, 0.6])))
    assert callback.exported_to == tmp_path / "onnx"
    transcriber = Transcriber.from_pretrained(tmp_path / "onnx")
    assert transcriber.backend.name == "onnx"
    assert transcriber.transcribe([CLIP])[0].error is None
