"""Training and tuning jobs from a laptop, on the SageMaker Python SDK v3 (``ModelTrainer``).

The job runs ``sagemaker_entry/train.py`` from a staged copy of this source tree (the package,
the entry, ``configs/`` and a ``requirements.txt`` without torch) in the PyTorch training
container. Spot training sets ``EnableManagedSpotTraining``, ``MaxWaitTimeInSeconds`` and a
checkpoint S3 URI that SageMaker syncs with ``/opt/ml/checkpoints``; several instances (or
``processes_per_node``) run through ModelTrainer's ``Torchrun`` driver. Tuning uses v3's
``HyperparameterTuner`` on the same ``ModelTrainer``, minimising ``eval_wer``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asr_lightning.errors import ConfigError
from asr_lightning.sagemaker.contract import DEFAULT_CHECKPOINT_DIR, LM_CHANNEL, METRIC_DEFINITIONS
from asr_lightning.sagemaker.model_dir import REQUIREMENTS, runtime_requirements

log = logging.getLogger(__name__)

#: The entry script, relative to the staged source folder.
ENTRY_SCRIPT = "sagemaker_entry/train.py"
#: What the staged source folder holds (relative to the repository root).
STAGED = ("asr_lightning", "sagemaker_entry", "configs", "pyproject.toml")
_STAGE_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
#: The PyTorch deep learning container the job runs in (see ``sagemaker.core.image_uris``).
TRAINING_FRAMEWORK_VERSION = "2.8.0"
PY_VERSION = "py312"
OBJECTIVE_METRIC = "eval_wer"
Strategy = Literal["Bayesian", "Random", "Hyperband", "Grid"]


@dataclass(frozen=True)
class AwsTarget:
    """Where jobs run: nothing in this package names an account."""

    role: str | None = None
    """IAM execution role ARN that SageMaker assumes (jobs and models need one)."""
    region: str | None = None
    """AWS region; ``None`` for the default of the AWS configuration."""
    bucket: str | None = None
    """S3 bucket for code, outputs and checkpoints; ``None`` for SageMaker's default bucket."""
    prefix: str = "asr-lightning"
    """Key prefix under the bucket."""


@dataclass(frozen=True)
class TrainOptions:
    """One training job (also the template of a tuning job's jobs)."""

    train: str
    """S3 URI of the train channel (manifest + audio, Common Voice folder, saved dataset)."""
    eval: str | None = None
    """S3 URI of the eval channel."""
    lm: str | None = None
    """S3 URI of the ``lm`` channel: a word n-gram LM (ARPA or KenLM binary) that validation
    decodes with and the model folders carry (the ``lm_path`` hyperparameter picks a file)."""
    config: str | None = "configs/quickstart.yaml"
    """LightningCLI YAML inside the source tree (the ``config`` hyperparameter)."""
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    """More hyperparameters: short names (learning_rate, batch_size...) or LightningCLI keys."""
    instance_type: str = "ml.g5.xlarge"
    """Training instance type."""
    instance_count: int = 1
    """Instances; more than one trains with DDP through torchrun."""
    processes_per_node: int | None = None
    """Processes per instance under torchrun; ``None``: one per GPU."""
    volume_gb: int = 100
    """EBS volume per instance (data channels are copied there)."""
    spot: bool = False
    """Managed spot training (resumes from the checkpoint S3 URI after an interruption)."""
    max_run_s: int = 24 * 3600
    """Longest training time."""
    max_wait_s: int | None = None
    """Longest time including waits for spot capacity; default twice ``max_run_s``."""
    checkpoint_s3_uri: str | None = None
    """Where checkpoints go; default ``s3://<bucket>/<prefix>/<job_name>/<job>/checkpoints``,
    one per job: give the URI of an earlier job to resume from it."""
    image_uri: str | None = None
    """Training image; default the SageMaker PyTorch training container for the region."""
    job_name: str = "asr-lightning"
    """Base name of the job (SageMaker appends a timestamp)."""


@dataclass(frozen=True)
class TuneOptions:
    """A hyperparameter tuning job minimising ``eval_wer`` over learning rate and batch size."""

    learning_rate: tuple[float, float] = (1e-5, 1e-3)
    """Learning rate range, searched on a log scale."""
    batch_size: tuple[int, int] = (8, 32)
    """Batch size range (utterances per batch)."""
    max_jobs: int = 8
    """Training jobs in all."""
    max_parallel_jobs: int = 2
    """Training jobs at once."""
    strategy: Strategy = "Bayesian"
    """Search strategy."""


def sagemaker_session(target: AwsTarget) -> Any:
    """A v3 ``Session`` for the target's region and bucket."""
    import boto3
    from sagemaker.core.helper.session_helper import Session

    boto_session = boto3.Session(region_name=target.region)
    return Session(
        boto_session=boto_session, default_bucket=target.bucket, default_bucket_prefix=target.prefix
    )


def stage_source(repo_root: Path, into: Path) -> Path:
    """Copies what the job needs from ``repo_root`` into ``into`` (the uploaded source dir)."""
    for name in STAGED:
        source = repo_root / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=_STAGE_IGNORE, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, into / name)
    if not (into / ENTRY_SCRIPT).is_file():
        raise ConfigError(f"{repo_root / ENTRY_SCRIPT} is missing: run from an asr-lightning tree")
    lines = runtime_requirements(repo_root)
    (into / REQUIREMENTS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return into


def pytorch_image(
    image_uri: str | None, instance_type: str, region: str, version: str, scope: str
) -> str:
    """``image_uri`` when given, else the AWS PyTorch image of that version, scope and region."""
    if image_uri:
        return image_uri
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        framework="pytorch",
        region=region,
        version=version,
        py_version=PY_VERSION,
        instance_type=instance_type,
        image_scope=scope,
    )


def training_image(options: TrainOptions, region: str) -> str:
    return pytorch_image(
        options.image_uri, options.instance_type, region, TRAINING_FRAMEWORK_VERSION, "training"
    )


def _hyperparameters(options: TrainOptions) -> dict[str, Any]:
    hps = dict(options.hyperparameters)
    if options.config:
        hps.setdefault("config", options.config)
    return hps


def build_model_trainer(
    options: TrainOptions, target: AwsTarget, source_dir: Path, session: Any
) -> Any:
    """The v3 ``ModelTrainer`` for ``options`` (nothing is sent yet)."""
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        MetricDefinition,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.train.distributed import Torchrun
    from sagemaker.train.model_trainer import ModelTrainer

    max_wait = (options.max_wait_s or 2 * options.max_run_s) if options.spot else None
    if max_wait is not None and max_wait < options.max_run_s:
        raise ConfigError(f"max_wait_s ({max_wait}) must be >= max_run_s ({options.max_run_s})")
    several = options.instance_count > 1 or (options.processes_per_node or 1) > 1
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=target.role,
        base_job_name=options.job_name,
        training_image=training_image(options, session.boto_region_name),
        source_code=SourceCode(
            source_dir=str(source_dir), entry_script=ENTRY_SCRIPT, requirements=REQUIREMENTS
        ),
        distributed=Torchrun(process_count_per_node=options.processes_per_node)
        if several
        else None,
        compute=Compute(
            instance_type=options.instance_type,
            instance_count=options.instance_count,
            volume_size_in_gb=options.volume_gb,
            enable_managed_spot_training=options.spot or None,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=options.max_run_s, max_wait_time_in_seconds=max_wait
        ),
        # s3_uri None: ModelTrainer names one per job under the session's bucket and prefix
        checkpoint_config=CheckpointConfig(
            s3_uri=options.checkpoint_s3_uri, local_path=DEFAULT_CHECKPOINT_DIR
        ),
        hyperparameters=_hyperparameters(options),
    )
    definitions = [MetricDefinition(name=n, regex=r) for n, r in METRIC_DEFINITIONS.items()]
    return trainer.with_metric_definitions(definitions)


def _channels(options: TrainOptions) -> list[Any]:
    from sagemaker.core.training.configs import InputData

    channels = [InputData(channel_name="train", data_source=options.train)]
    if options.eval:
        channels.append(InputData(channel_name="eval", data_source=options.eval))
    if options.lm:
        channels.append(InputData(channel_name=LM_CHANNEL, data_source=options.lm))
    return channels


def start_training(
    options: TrainOptions, target: AwsTarget, repo_root: Path, wait: bool = False
) -> str:
    """Starts the training job; returns its name."""
    session = sagemaker_session(target)
    with tempfile.TemporaryDirectory(prefix="asr-lightning-source-") as staging:
        source = stage_source(repo_root, Path(staging))
        trainer = build_model_trainer(options, target, source, session)
        trainer.train(input_data_config=_channels(options), wait=wait, logs=wait)
    name = trainer._latest_training_job.training_job_name  # v3 keeps the job it started here
    log.info("started training job %s", name)
    return name


def start_tuning(
    options: TrainOptions,
    tuning: TuneOptions,
    target: AwsTarget,
    repo_root: Path,
    wait: bool = False,
) -> str:
    """Starts a tuning job minimising ``eval_wer``; returns its name."""
    from sagemaker.core.parameter import ContinuousParameter, IntegerParameter
    from sagemaker.train.tuner import HyperparameterTuner

    session = sagemaker_session(target)
    if not options.checkpoint_s3_uri:
        # the tuner sends CheckpointConfig as is; SageMaker adds each training job's name
        bucket = target.bucket or session.default_bucket()
        uri = f"s3://{bucket}/{target.prefix}/{options.job_name}/tuning-checkpoints"
        options = dataclasses.replace(options, checkpoint_s3_uri=uri)
    with tempfile.TemporaryDirectory(prefix="asr-lightning-source-") as staging:
        source = stage_source(repo_root, Path(staging))
        trainer = build_model_trainer(options, target, source, session)
        tuner = HyperparameterTuner(
            model_trainer=trainer,
            objective_metric_name=OBJECTIVE_METRIC,
            objective_type="Minimize",
            hyperparameter_ranges={
                "learning_rate": ContinuousParameter(
                    *tuning.learning_rate, scaling_type="Logarithmic"
                ),
                "batch_size": IntegerParameter(*tuning.batch_size),
            },
            metric_definitions=[{"Name": n, "Regex": r} for n, r in METRIC_DEFINITIONS.items()],
            strategy=tuning.strategy,
            max_jobs=tuning.max_jobs,
            max_parallel_jobs=tuning.max_parallel_jobs,
            base_tuning_job_name=options.job_name[:20],
        )
        tuner.tune(inputs=_channels(options), wait=wait)
    name = tuner.latest_tuning_job.hyper_parameter_tuning_job_name
    log.info("started tuning job %s", name)
    return name
