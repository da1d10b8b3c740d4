"""LightningCLI for ``fit|validate|test|predict``: defaults, links, resuming and the HF export.

``--ckpt_path last`` (and ``best`` for evaluation) are resolved here across the logger's version
folders: Lightning alone looks for them only in the new run's folder, which a fresh
``TensorBoardLogger`` version never has, and silently trains from scratch.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
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

from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.errors import ConfigError
from asr_lightning.model.averaging import is_averaged_checkpoint
from asr_lightning.training.callbacks import (
    MetricLines,
    ResumableCheckpoint,
    SaveHFModel,
)
from asr_lightning.training.datamodule import ASRDataModule
from asr_lightning.training.loggers import RunConfigSaver
from asr_lightning.training.memory import ReleaseMemory
from asr_lightning.training.module import CTCModule

log = logging.getLogger(__name__)

#: Glob of the checkpoints ``ModelCheckpoint(save_last=True)`` writes (``last-v1.ckpt``...).
LAST_GLOB = "last*.ckpt"
#: Logger folder names when the config names none (Lightning's default).
DEFAULT_LOGGER_NAME = "lightning_logs"


class ASRLightningCLI(LightningCLI):
    """LightningCLI with the project's callbacks and the data <-> model links."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
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
        # glibc keeps freed tensors' memory: give it back at epoch ends (flat RSS over epochs)
        parser.add_lightning_class_args(ReleaseMemory, "release_memory")
        # the processor flows from the model's checkpoint to the data, the vocabulary back
        parser.link_arguments("model.model_name_or_path", "data.processor", apply_on="parse")
        parser.link_arguments("model.model_type", "data.model_type", apply_on="parse")
        parser.link_arguments(
            "model.config_overrides", "data.model_config_overrides", apply_on="parse"
        )
        parser.link_arguments("data.vocab", "model.vocab", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_json", "model.tokenizer_json", apply_on="instantiate")
        # the level normalization training applies travels with the model to inference
        parser.link_arguments("data.level", "model.input_level", apply_on="parse")
        # one decoding for validation, test and predict, as for every other runtime
        parser.add_class_arguments(DecodingOptions, "decoding")
        parser.link_arguments(
            "decoding", "model.decoding", compute_fn=_plain_values, apply_on="parse"
        )

    def before_instantiate_classes(self) -> None:
        """Resolve ``--ckpt_path last`` (``fit``: in the same log folder) and ``best``."""
        config = self.config[self.subcommand]
        wanted = config.get("ckpt_path")
        if self.subcommand == "fit" and wanted:
            _quiet_resume_warnings()
            _refuse_averaged(wanted)
        if wanted not in ("last", "best") or (wanted == "best" and self.subcommand == "fit"):
            return
        folders, logger_args = _checkpoint_folders(config)
        last = newest_last_checkpoint(folders)
        if last is None:
            searched = ", ".join(str(folder) for folder in folders) or "(none)"
            if self.subcommand == "fit":  # like Lightning: "last" may be set before a first run
                log.warning("no last checkpoint in %s: training from the start", searched)
                config.ckpt_path = None
                return
            raise ConfigError(
                f"--ckpt_path {wanted}: no last checkpoint in {searched}; give the path of a "
                ".ckpt file (checkpoints are in <log_dir>/checkpoints)"
            )
        if wanted == "best":
            config.ckpt_path = str(best_checkpoint_of(last))
        else:
            config.ckpt_path = str(last)
        if self.subcommand == "fit" and logger_args is not None:
            # keep logging and checkpointing in the interrupted run's folder
            logger_args.version = last.parent.parent.name
            self.save_config_kwargs["overwrite"] = True
        log.info("--ckpt_path %s: %s", wanted, config.ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The trainer, with a rich progress bar unless disabled or another one is configured;
        without a bar, a line of metrics (``step=.. eval_wer=..``) after each validation.

        (A progress bar in ``trainer_defaults`` would be added even with
        ``trainer.enable_progress_bar: false``, which the Trainer refuses.)
        """
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        wanted = config.get("enable_progress_bar") is not False
        if wanted and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, RichProgressBar(leave=True)]
        elif not wanted and not any(isinstance(c, MetricLines) for c in callbacks):
            # no bar (CI logs, SageMaker): one line of metrics after each validation instead
            kwargs["callbacks"] = [*callbacks, MetricLines()]
        return super().instantiate_trainer(**kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> pl.Trainer:
        """``trainer.enable_checkpointing: false`` drops the ``checkpoint`` callback and
        ``trainer.logger: false`` the ``lr_monitor``, which the Trainer would otherwise refuse
        with a traceback."""
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        if config.get("logger") is False:
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        return super()._instantiate_trainer(config, callbacks)


def _plain_values(options: Any) -> dict[str, Any]:
    """The ``decoding`` section as a plain mapping (what checkpoints and loggers keep)."""
    return dict(vars(options)) if not isinstance(options, dict) else dict(options)


def _refuse_averaged(ckpt_path: str) -> None:
    """``fit --ckpt_path`` of an averaged checkpoint: it has no optimizer or loop to resume."""
    if ckpt_path not in ("last", "best") and is_averaged_checkpoint(ckpt_path):
        raise ConfigError(
            f"--ckpt_path {ckpt_path} is an averaged checkpoint (asr-lightning average): it holds "
            "weights only, no optimizer, scheduler or loop state, so fit cannot resume from it. "
            "Evaluate or export it (test --ckpt_path, transcribe, export), or train on from its "
            "weights: asr-lightning average ... --hf-output DIR, then fit "
            "--model.model_name_or_path DIR"
        )


def _quiet_resume_warnings() -> None:
    """Silence two Lightning warnings that are wrong about resuming with this data module.

    ASRDataModule saves the sampler's position and resumes mid-epoch (Lightning only knows
    resumable DataLoaders); and a resumed run writes into its own, non-empty, checkpoint folder.
    """
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def newest_last_checkpoint(folders: Sequence[Path]) -> Path | None:
    """The most recently written ``last*.ckpt`` in ``folders``, or None."""
    found = [path for folder in folders for path in folder.glob(LAST_GLOB) if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def best_checkpoint_of(last: Path) -> Path:
    """The best checkpoint recorded in the ``ModelCheckpoint`` state saved in ``last``."""
    checkpoint = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    for key, state in checkpoint.get("callbacks", {}).items():
        best = state.get("best_model_path") if "Checkpoint" in key else None
        if best and Path(best).is_file():
            return Path(best)
    raise ConfigError(
        f"--ckpt_path best: {last} records no best checkpoint that still exists (was there a "
        "validation?); give the path of a .ckpt file or use --ckpt_path last"
    )


def _checkpoint_folders(config: Any) -> tuple[list[Path], Any | None]:
    """Folders ``ModelCheckpoint`` writes to in this config's runs, and the logger's init args
    when the folder of the next run is a new logger version that resuming should reuse."""
    root = Path(config.trainer.get("default_root_dir") or os.getcwd())
    dirpath = config.get("checkpoint", {}).get("dirpath")
    if dirpath:
        return [Path(dirpath)], None
    logger = config.trainer.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else False
    if logger is False:
        return [root / "checkpoints"], None
    if logger is None or logger is True:
        return sorted((root / DEFAULT_LOGGER_NAME).glob("*/checkpoints")), None
    args = logger.get("init_args")
    if args is None or "version" not in args:
        return [], None  # a logger whose folders we do not know: Lightning decides
    save_dir = Path(args.get("save_dir") or root)
    name = args.get("name") or ""
    if args.get("version") is not None:
        version = args.version if isinstance(args.version, str) else f"version_{args.version}"
        return [save_dir / name / version / "checkpoints"], None
    return sorted((save_dir / name).glob("*/checkpoints")), args


def run_lightning_cli(argv: Sequence[str]) -> ASRLightningCLI:
    """Runs ``asr-lightning fit|validate|test|predict ...``."""
    return ASRLightningCLI(
        CTCModule,
        ASRDataModule,
        # None: LightningCLI reads sys.argv itself (it warns when given both)
        args=None if list(argv) == sys.argv[1:] else list(argv),
        seed_everything_default=42,
        save_config_callback=RunConfigSaver,  # a run folder for every logger
        trainer_defaults={
            "use_distributed_sampler": False,  # the bucket sampler shards by rank itself
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": "asr"},
            },
        },
    )
