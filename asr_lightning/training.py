"""LightningCLI for ``fit|validate|test|predict``: defaults, links and the end-of-fit export."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from asr_lightning.data.datamodule import ASRDataModule
from asr_lightning.model.module import CTCModule

log = logging.getLogger(__name__)

#: Name of the Hugging Face model folder written next to the logs at the end of ``fit``.
HF_FOLDER = "hf_model"


class SaveHFModel(pl.Callback):
    """At the end of ``fit``, saves the best checkpoint as a Hugging Face model folder.

    The folder (safetensors + processor) loads with ``AutoModelForCTC.from_pretrained`` and
    ``transformers.pipeline("automatic-speech-recognition", model=dir)``, and can be fine-tuned
    again as ``model.model_name_or_path``.

    Args:
        dirpath: Where to write the folder; defaults to ``<log_dir>/hf_model``.
        use_best: Load the best checkpoint (by the monitored metric) before saving.
    """

    def __init__(self, dirpath: str | None = None, use_best: bool = True) -> None:
        self.dirpath = dirpath
        self.use_best = use_best
        self.saved_to: Path | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted or trainer.sanity_checking:
            return
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if self.use_best and best:
            # weights only: the module instance keeps its processor and configuration
            checkpoint = torch.load(best, map_location="cpu", weights_only=False)
            pl_module.load_state_dict(checkpoint["state_dict"])
            rank_zero_info(f"loaded the best checkpoint {best}")
        out = Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / HF_FOLDER)
        if trainer.is_global_zero:
            pl_module.save_hf(out)
            rank_zero_info(f"saved the Hugging Face model folder to {out}")
        self.saved_to = out
        trainer.strategy.barrier("hf_export")


class ASRLightningCLI(LightningCLI):
    """LightningCLI with the project's callbacks and the data <-> model links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/wer",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 2,
                "checkpoint.save_last": True,
                "checkpoint.filename": "step{step}-wer{val/wer:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults(
            {
                "early_stopping.monitor": "val/wer",
                "early_stopping.mode": "min",
                "early_stopping.patience": 3,
                # after each validation, never at an epoch end without one (max_steps mid-epoch)
                "early_stopping.check_on_train_epoch_end": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(SaveHFModel, "hf_export")
        # the processor flows from the model's checkpoint to the data, the vocabulary back
        parser.link_arguments("model.model_name_or_path", "data.processor", apply_on="parse")
        parser.link_arguments("model.model_type", "data.model_type", apply_on="parse")
        parser.link_arguments(
            "model.config_overrides", "data.model_config_overrides", apply_on="parse"
        )
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The trainer, with a rich progress bar unless disabled or another one is configured.

        (A progress bar in ``trainer_defaults`` would be added even with
        ``trainer.enable_progress_bar: false``, which the Trainer refuses.)
        """
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        wanted = config.get("enable_progress_bar") is not False
        if wanted and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RichProgressBar(leave=True)]
        return super().instantiate_trainer(**kwargs)


def run_lightning_cli(argv: Sequence[str]) -> ASRLightningCLI:
    """Runs ``asr-lightning fit|validate|test|predict ...``."""
    return ASRLightningCLI(
        CTCModule,
        ASRDataModule,
        # None: LightningCLI reads sys.argv itself (it warns when given both)
        args=None if list(argv) == sys.argv[1:] else list(argv),
        seed_everything_default=42,
        trainer_defaults={
            "use_distributed_sampler": False,  # the bucket sampler shards by rank itself
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": "asr"},
            },
        },
    )
