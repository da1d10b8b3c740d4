"""The ONNX export callback writes a checked ONNX folder at the end of fit; checkpoint averaging
refuses, before training, a checkpoint callback that cannot keep what it averages."""

from __future__ import annotations

import pytest

from asr_lightning.errors import ConfigError
from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.training.callbacks import AverageCheckpoints, ONNXExport, ResumableCheckpoint
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


@pytest.mark.parametrize(
    ("average", "checkpointing", "expected"),
    [
        ({"k": 3}, {"monitor": "val/wer", "save_top_k": 2}, "set checkpoint.save_top_k: 3"),
        ({"k": 2, "mode": "last"}, {"monitor": "val/wer", "save_top_k": 2}, "save_top_k: -1"),
        ({"k": 2}, {"monitor": None}, "ModelCheckpoint with a monitor"),
    ],
)
def test_averaging_refuses_checkpointing_that_keeps_too_little(
    tmp_path, average, checkpointing, expected
):
    module = scratch_module("wav2vec2")
    callbacks = [
        AverageCheckpoints(**average),
        ResumableCheckpoint(dirpath=tmp_path, **checkpointing),
    ]
    fit = trainer(
        tmp_path, max_steps=1, callbacks=callbacks, enable_checkpointing=True, limit_val_batches=0
    )
    with pytest.raises(ConfigError, match=expected):
        batches = loader(batch_of(module, [0.5]))
        fit.fit(module, train_dataloaders=batches, val_dataloaders=batches)
    assert fit.global_step == 0
