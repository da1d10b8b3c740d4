"""Every Lightning logger a user picks with ``--trainer.logger``: MLflow with a local store
(a database or a folder) and W&B offline, each run with its own folder."""

from __future__ import annotations

import re
from pathlib import Path

from asr_lightning.training.loggers import loggable_hyperparameters
from tests.training_support import run_cli, tiny_config

#: What MLflow accepts as a parameter or metric name.
VALID_NAME = re.compile(r"^[A-Za-z0-9_\-. /]+$")


def test_hyperparameters_keep_the_vocabulary_as_its_size_and_tokens_with_valid_names():
    vocab = {"<pad>": 0, "|": 1, "a": 2, "b": 3, "<unk>": 4}
    hparams = {"vocab": vocab, "decoding": {"beam_width": 8, "lm": None}, "lr": 1e-3, "x<y": 1}
    params = loggable_hyperparameters(hparams)
    assert params["vocab_size"] == 5 and params["vocab_tokens"] == "<pad> | a b <unk>"
    assert params["decoding/beam_width"] == 8 and params["decoding/lm"] is None
    assert params["x_y"] == 1
    assert all(VALID_NAME.match(name) for name in params)


def _fit(tmp_path: Path, *logger: str) -> None:
    config = tiny_config(tmp_path, train=8, evaluation=4, trainer={"max_steps": 2})
    done = run_cli("fit", "--config", str(config), *logger)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_mlflow_with_a_local_database_logs_params_metrics_and_the_config(tmp_path):
    """MLflow 3 refuses a folder store (./mlruns) unless MLFLOW_ALLOW_FILE_STORE=true: the
    local store users get is a SQLite database, which Lightning gives no log_dir."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = [
        "--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger",
        "--trainer.logger.init_args.tracking_uri", uri,
        "--trainer.logger.init_args.experiment_name", "asr",
        # artifacts (config.yaml) beside the database, not in ./mlruns of the working folder
        "--trainer.logger.init_args.artifact_location", f"file:{tmp_path}/artifacts",
    ]  # fmt: skip
    _fit(tmp_path, *logger)
    _fit(tmp_path, *logger)  # a second run gets its own folder and run

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("asr")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert int(run.data.params["vocab_size"]) > 20
        assert run.data.params["learning_rate"] == "0.003"
        assert "val/wer" in run.data.metrics and "train/loss" in run.data.metrics
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "config.yaml" in artifacts
    assert list((tmp_path / "artifacts").glob("*/artifacts/config.yaml"))
    root = tmp_path / "runs"  # the config's default_root_dir
    folders = {run.info.run_id: root / experiment.experiment_id / run.info.run_id for run in runs}
    for folder in folders.values():  # each run's model, config and checkpoints apart
        assert (folder / "hf_model" / "config.json").is_file()
        assert (folder / "config.yaml").is_file()
        assert list((folder / "checkpoints").glob("*.ckpt"))


def test_wandb_offline_logs_the_run_into_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = [
        "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.init_args.offline", "true",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "wandb_runs"),
        "--trainer.logger.init_args.project", "asr",
    ]  # fmt: skip
    _fit(tmp_path, *logger)
    offline = list((tmp_path / "wandb_runs" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    run_id = offline[0].name.rsplit("-", 1)[-1]
    folder = tmp_path / "wandb_runs" / "asr" / run_id
    assert (folder / "hf_model" / "config.json").is_file() and (folder / "config.yaml").is_file()
