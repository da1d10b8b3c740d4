"""A Lightning callback that exports the best model to ONNX at the end of ``fit``.

Enable it in any config (it is not on by default: export takes a minute on big models)::

    trainer:
      callbacks:
        - class_path: asr_lightning.export.callback.ONNXExport
          init_args: {quantize: int8, check_audio: [data/quickstart/audio/test-00000.opus]}
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

from asr_lightning.export.onnx import DEFAULT_OPSET, Quantization, export_loaded
from asr_lightning.inference.models import LoadedModel

log = logging.getLogger(__name__)

#: Name of the ONNX folder written next to the logs at the end of ``fit``.
ONNX_FOLDER = "onnx_model"


class ONNXExport(pl.Callback):
    """At the end of ``fit``, exports the best checkpoint to an ONNX folder and checks it.

    Args:
        dirpath: Where to write the folder; defaults to ``<log_dir>/onnx_model``.
        quantize: Also write ``model.int8.onnx`` (INT8 dynamic quantization).
        opset: ONNX opset version.
        check_audio: Clips (paths) to compare ONNX with PyTorch on; synthetic tones when empty.
        use_best: Load the best checkpoint (by the monitored metric) before exporting.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        quantize: Quantization | None = None,
        opset: int = DEFAULT_OPSET,
        check_audio: list[str] | None = None,
        use_best: bool = True,
    ) -> None:
        self.dirpath = dirpath
        self.quantize = quantize
        self.opset = opset
        self.check_audio = list(check_audio or [])
        self.use_best = use_best
        self.exported_to: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or trainer.sanity_checking:
            return
        from asr_lightning.training import load_best_weights

        best = load_best_weights(trainer, pl_module) if self.use_best else ""
        out = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / ONNX_FOLDER)
        if trainer.is_global_zero:
            loaded = LoadedModel(
                pl_module.model.cpu().eval(), pl_module.feature_extractor, pl_module.tokenizer
            )
            report = export_loaded(
                loaded, out, self.opset, self.quantize, self.check_audio, source=best or "fit"
            )
            rank_zero_info(report.render())
        self.exported_to = out
        trainer.strategy.barrier("onnx_export")
