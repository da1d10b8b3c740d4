"""Run folders and hyperparameters for every Lightning logger (TensorBoard, CSV, MLflow, W&B).

Lightning's ``trainer.log_dir`` is a run's own folder only for TensorBoard and CSV loggers. For
the others it is the logger's ``save_dir``: shared by every run of an MLflow file store or a
W&B folder, and ``None`` for an MLflow database (``sqlite:///mlflow.db``) or server, where
LightningCLI then fails to save its config. :func:`run_dir` gives every run its own folder,
where ``ModelCheckpoint`` puts its checkpoints (``<save_dir>/<name>/<version>``).

MLflow allows parameter names of letters, digits and ``_ - . space /`` only, and a vocabulary
flattened into parameters (``vocab/<pad>``) breaks that rule and would be hundreds of them:
:func:`loggable_hyperparameters` logs its size and tokens instead, with every name made valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from asr_lightning.text.subword import subword_kind

#: Characters MLflow refuses in a parameter or metric name.
_INVALID_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")
#: Vocabulary tokens listed in the logged hyperparameters (MLflow keeps 250 characters).
SHOWN_TOKENS = 100


def run_dir(trainer: pl.Trainer) -> Path:
    """The folder of this run's outputs (config, Hugging Face model, predictions, ONNX).

    TensorBoard and CSV: their version folder (``trainer.log_dir``). Other loggers:
    ``<save_dir or default_root_dir>/<name>/<version>``, the folder of the run's checkpoints
    (an MLflow run: ``<experiment id>/<run id>``). No logger: ``default_root_dir``. The same
    path on every rank.
    """
    logger = _versioned_logger(trainer)
    if logger is None:
        return Path(trainer.log_dir or trainer.default_root_dir)
    folder = None
    if trainer.is_global_zero:
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        folder = str(Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version)
    return Path(trainer.strategy.broadcast(folder))


def loggable_hyperparameters(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` as loggers take them: the vocabulary as its size and tokens, nested
    mappings flattened (``decoding/beam_width``), names valid for MLflow."""
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                add(f"{prefix}/{key}" if prefix else str(key), inner)
        else:
            flat[_INVALID_NAME.sub("_", prefix)] = value

    for key, value in hparams.items():
        if key == "vocab" and isinstance(value, Mapping):
            tokens = sorted(value, key=value.__getitem__)
            flat["vocab_size"] = len(tokens)
            flat["vocab_tokens"] = " ".join(tokens[:SHOWN_TOKENS])
        elif key == "tokenizer_json":  # the whole subword model: its kind is what a run compares
            flat["tokenizer"] = subword_kind(value) if value else "char"
        else:
            add(str(key), value)
    return flat


class RunConfigSaver(SaveConfigCallback):
    """LightningCLI's config saver, writing ``config.yaml`` into :func:`run_dir` (where
    Lightning's own asserts that a logger without a local folder has one), and giving it to an
    MLflow run as an artifact."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        logger = _versioned_logger(trainer)
        if logger is None:  # trainer.log_dir is the run's own folder
            return super().setup(trainer, pl_module, stage)
        folder = run_dir(trainer)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / self.config_filename
            self.parser.save(
                self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile
            )
            _log_artifact(logger, path)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def _versioned_logger(trainer: pl.Trainer) -> Any:
    """The first logger when it is one whose ``trainer.log_dir`` is not a run's own folder
    (MLflow, W&B, ...); ``None`` for TensorBoard, CSV or no logger."""
    logger = trainer.loggers[0] if trainer.loggers else None
    return None if isinstance(logger, (TensorBoardLogger, CSVLogger, type(None))) else logger


def _log_artifact(logger: Any, path: Path) -> None:
    """Attach a file to the run of an MLflow logger (other loggers keep it in the folder)."""
    from lightning.pytorch.loggers import MLFlowLogger

    if isinstance(logger, MLFlowLogger):
        logger.experiment.log_artifact(logger.run_id, str(path))
