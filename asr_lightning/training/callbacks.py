"""The callbacks of every ``fit``: resumable checkpoints, the Hugging Face folder at the end,
metric lines for SageMaker, and the optional ONNX export.

``ONNXExport`` is off by default (export takes a minute on big models); enable it in a config::

    trainer:
      callbacks:
        - class_path: asr_lightning.training.callbacks.ONNXExport
          init_args: {quantize: int8, check_audio: [data/quickstart/audio/test-00000.opus]}

``AverageCheckpoints`` averages the weights of the best (by the monitored dev metric) or last few
checkpoints at the end of ``fit`` into ``<run folder>/averaged.ckpt`` and its HF folder::

    trainer:
      callbacks:
        - class_path: asr_lightning.training.callbacks.AverageCheckpoints
          init_args: {k: 3}  # needs checkpoint.save_top_k >= 3

``MetricLines`` prints, after each validation (not the sanity check), on global rank zero, the
line SageMaker's metric definitions (``eval_wer=([0-9.]+)``) read from the job's log::

    step=120 epoch=3 eval_wer=0.412000 eval_cer=0.180000 eval_loss=1.234000
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from asr_lightning.artifacts import (
    AVERAGED_CHECKPOINT,
    AVERAGED_HF_SUBDIR,
    HF_SUBDIR,
    ONNX_FOLDER,
)
from asr_lightning.errors import ConfigError
from asr_lightning.export.onnx import DEFAULT_OPSET, Quantization, export_loaded
from asr_lightning.inference.models import LoadedModel
from asr_lightning.model.averaging import (
    average_checkpoints,
    read_info,
    select_best,
    select_last,
)
from asr_lightning.sagemaker.contract import PRINTED_METRICS, metric_line
from asr_lightning.training.loggers import run_dir

log = logging.getLogger(__name__)


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``every_n_train_steps`` refreshes ``last.ckpt`` only.

    The best ``save_top_k`` checkpoints by ``monitor`` are chosen after each validation, when the
    metric is fresh; ``last.ckpt`` is also written every ``every_n_train_steps`` optimizer steps,
    so that a killed run resumes close to where it stopped (``fit --ckpt_path last``). Lightning's
    own ``every_n_train_steps`` with a validation metric as ``monitor`` saves nothing before the
    first validation, then ranks checkpoints by the previous validation's value and stops saving
    after validations. ``last.ckpt`` is also written at the end of training when the last step
    was not saved (``max_steps`` or ``max_time`` between two saves).

    Args:
        every_n_train_steps: Write ``last.ckpt`` every this many optimizer steps (needs
            ``save_last``); ``None`` or 0: only after validations and at the end of training.
        **kwargs: The other ``ModelCheckpoint`` arguments.
    """

    def __init__(self, *, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise ConfigError(
                f"checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}"
            )
        if every_n_train_steps and not self.save_last:
            raise ConfigError(
                "checkpoint.every_n_train_steps refreshes last.ckpt: set checkpoint.save_last: true"
            )
        self.every_n_train_steps = every_n_train_steps or 0
        self._periodic_step = -1
        self._stage: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._stage = stage

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the ranking when fitting resumes; ``test --ckpt_path`` has none to keep.

        Lightning restores callback states for every stage and warns that the checkpoint folder
        changed when ``test`` or ``validate`` log to a new version folder, as they always do.
        """
        if self._stage in (None, "fit"):
            super().load_state_dict(state_dict)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step, every = trainer.global_step, self.every_n_train_steps
        # with gradient accumulation several batches end on the same step: save once, after the
        # batch that stepped (every rank takes the same decision: saving is collective)
        if not every or step == 0 or step % every or step == self._periodic_step:
            return
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self._periodic_step = step
        self._save_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``last.ckpt`` holds the final state, also when training stopped between saves."""
        super().on_train_end(trainer, pl_module)
        saved = (self._periodic_step, self._last_global_step_saved)
        if self.save_last and not trainer.fast_dev_run and trainer.global_step not in saved:
            self._save_last(trainer)

    def _save_last(self, trainer: pl.Trainer) -> None:
        path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        self.last_model_path = path  # before saving: it is part of the saved callback state
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)


def load_best_weights(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    """Loads the best checkpoint's weights into the module (its processor and configuration
    stay); returns the checkpoint's path, ``""`` when there is none.

    Call it on global rank zero only: checkpoints are written there, and on several nodes the
    other nodes' disks do not have them (every rank knows the path, not the file).
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        checkpoint = torch.load(best, map_location="cpu", weights_only=False)
        pl_module.load_state_dict(checkpoint["state_dict"])
        rank_zero_info(f"loaded the best checkpoint {best}")
    return best


class SaveHFModel(pl.Callback):
    """At the end of ``fit``, saves the best checkpoint as a Hugging Face model folder.

    The folder (safetensors + processor) loads with ``AutoModelForCTC.from_pretrained`` and
    ``transformers.pipeline("automatic-speech-recognition", model=dir)``, and can be fine-tuned
    again as ``model.model_name_or_path``.

    Args:
        dirpath: Where to write the folder; defaults to ``<run folder>/hf_model``
            (:func:`~asr_lightning.training.loggers.run_dir`).
        use_best: Load the best checkpoint (by the monitored metric) before saving.
    """

    def __init__(self, dirpath: str | None = None, use_best: bool = True) -> None:
        self.dirpath = dirpath
        self.use_best = use_best
        self.saved_to: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or trainer.sanity_checking:
            return
        out = Path(self.dirpath) if self.dirpath else run_dir(trainer) / HF_SUBDIR
        if trainer.is_global_zero:  # the only rank that writes, and has the checkpoints on disk
            if self.use_best:
                load_best_weights(trainer, pl_module)
            pl_module.save_hf(out)
            rank_zero_info(f"saved the Hugging Face model folder to {out}")
        self.saved_to = out
        trainer.strategy.barrier("hf_export")


class ONNXExport(pl.Callback):
    """At the end of ``fit``, exports the best checkpoint to an ONNX folder and checks it.

    Args:
        dirpath: Where to write the folder; defaults to ``<run folder>/onnx_model``.
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
        out = Path(self.dirpath) if self.dirpath else run_dir(trainer) / ONNX_FOLDER
        if trainer.is_global_zero:  # the only rank that writes, and has the checkpoints on disk
            best = load_best_weights(trainer, pl_module) if self.use_best else ""
            loaded = LoadedModel(
                pl_module.model.cpu().eval(), pl_module.feature_extractor, pl_module.tokenizer
            )
            report = export_loaded(
                loaded,
                out,
                self.opset,
                self.quantize,
                self.check_audio,
                source=best or "fit",
                decoding=pl_module.decoding,
            )
            rank_zero_info(report.render())
        self.exported_to = out
        trainer.strategy.barrier("onnx_export")


class AverageCheckpoints(pl.Callback):
    """At the end of ``fit``, averages the weights of the ``k`` best checkpoints (by the
    checkpoint callback's monitored metric, e.g. the development WER) or of the last ``k``.

    Writes ``averaged.ckpt`` (weights and hyperparameters: no optimizer state, so ``test
    --ckpt_path``, ``transcribe`` and ``export`` read it, ``fit`` does not resume from it) and,
    with ``save_hf``, its Hugging Face folder (the module's own weights are put back after it).
    Fewer
    checkpoints than ``k`` (fewer validations): those there are, with a warning.

    Args:
        k: How many checkpoints to average.
        mode: ``best``: the ``k`` best by the monitored metric (needs ``checkpoint.save_top_k``
            >= ``k``); ``last``: the ``k`` of the highest steps, icefall's ``--avg`` (needs
            ``checkpoint.save_top_k: -1``, every validation's checkpoint kept).
        dirpath: Where to write ``averaged.ckpt`` and ``hf_model_averaged``; defaults to the
            run folder (:func:`~asr_lightning.training.loggers.run_dir`).
        save_hf: Also write the Hugging Face folder of the averaged weights.
    """

    def __init__(
        self,
        k: int = 5,
        mode: Literal["best", "last"] = "best",
        dirpath: str | None = None,
        save_hf: bool = True,
    ) -> None:
        if k < 1:
            raise ConfigError(f"AverageCheckpoints.k must be >= 1, got {k}")
        self.k = k
        self.mode = mode
        self.dirpath = dirpath
        self.save_hf = save_hf
        self.averaged_to: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse, before training, a checkpoint callback that cannot keep what is averaged."""
        if stage != "fit":
            return
        checkpointing = trainer.checkpoint_callback
        if not isinstance(checkpointing, ModelCheckpoint) or not checkpointing.monitor:
            raise ConfigError(
                "AverageCheckpoints averages the checkpoints of a ModelCheckpoint with a monitor: "
                "enable checkpointing (trainer.enable_checkpointing: true, checkpoint.monitor)"
            )
        top_k = checkpointing.save_top_k
        if self.mode == "last" and top_k != -1:
            raise ConfigError(
                "AverageCheckpoints(mode=last) averages the last validations' checkpoints: keep "
                f"them all with checkpoint.save_top_k: -1 (it is {top_k})"
            )
        if self.mode == "best" and top_k != -1 and top_k < self.k:
            raise ConfigError(
                f"AverageCheckpoints(k={self.k}) needs the {self.k} best checkpoints kept: set "
                f"checkpoint.save_top_k: {self.k} (it is {top_k})"
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or trainer.sanity_checking:
            return
        out = Path(self.dirpath) if self.dirpath else run_dir(trainer)
        if trainer.is_global_zero:  # the only rank that writes, and has the checkpoints on disk
            self._average(trainer, pl_module, out)
        self.averaged_to = out / AVERAGED_CHECKPOINT
        trainer.strategy.barrier("average_checkpoints")

    def _average(self, trainer: pl.Trainer, pl_module: pl.LightningModule, out: Path) -> None:
        checkpointing = trainer.checkpoint_callback
        kept = [Path(path) for path in getattr(checkpointing, "best_k_models", {})]
        infos = [read_info(path) for path in kept if path.is_file()]
        if not infos:
            rank_zero_warn("AverageCheckpoints: no checkpoint was saved (no validation?)")
            return
        chosen = select_best(infos, self.k) if self.mode == "best" else select_last(infos, self.k)
        if len(chosen) < self.k:
            rank_zero_warn(
                f"AverageCheckpoints: averaging {len(chosen)} checkpoint(s), not {self.k}: only "
                f"{len(chosen)} validation(s) were checkpointed"
            )
        selection = f"{self.mode} {len(chosen)} by {checkpointing.monitor}"
        report = average_checkpoints(
            [info.path for info in chosen], out / AVERAGED_CHECKPOINT, selection
        )
        rank_zero_info(report.render())
        if self.save_hf:
            averaged = torch.load(report.output, map_location="cpu", weights_only=False)
            own = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            try:
                pl_module.load_state_dict(averaged["state_dict"])
                pl_module.save_hf(out / AVERAGED_HF_SUBDIR)
            finally:  # the module keeps the weights it trained to: nothing changes behind it
                pl_module.load_state_dict(own)
            rank_zero_info(f"saved the averaged Hugging Face folder to {out / AVERAGED_HF_SUBDIR}")


class MetricLines(pl.Callback):
    """Prints ``eval_wer=...`` (and CER, loss, train loss) after each validation."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics
        metrics = {
            printed: float(logged[key]) for key, printed in PRINTED_METRICS.items() if key in logged
        }
        if "train/loss" in logged:
            metrics["train_loss"] = float(logged["train/loss"])
        print(metric_line(metrics, trainer.global_step, trainer.current_epoch), flush=True)
