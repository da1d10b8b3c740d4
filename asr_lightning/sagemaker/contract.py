"""The SageMaker training contract, turned into the ``asr-lightning fit`` call a local user makes.

A SageMaker training container describes the job through environment variables
(``SM_CHANNEL_<NAME>``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_HOSTS``,
``SM_CURRENT_HOST``, ``SM_NUM_GPUS``, ``SM_HPS``) and passes the hyperparameters again as
``--key value`` arguments to the entry script. This module is pure: the entry shim
(``sagemaker_entry/train.py``) hands it the environment as a mapping, and gets back the
LightningCLI arguments and, for several processes, the ``torchrun`` command. No Lightning here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asr_lightning.artifacts import HF_SUBDIR
from asr_lightning.data.sources import (
    CV_SPLITS,
    MANIFEST_SUFFIXES,
    PARQUET_SUFFIXES,
    TABLE_SUFFIXES,
    is_saved_dataset,
)
from asr_lightning.errors import ConfigError

#: Where SageMaker syncs ``CheckpointConfig.S3Uri`` to and from (spot interruptions resume here).
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"
#: The checkpoint a restarted job resumes from (``checkpoint.save_last``).
LAST_CHECKPOINT = "last.ckpt"
#: Channel name -> the data module argument it feeds.
CHANNEL_ARGUMENTS = {"train": "data.train", "eval": "data.validation", "test": "data.test"}
#: Short hyperparameter names -> the LightningCLI keys they set. A name with a dot is passed on
#: as is (``trainer.max_epochs``, ``data.num_workers``...).
HYPERPARAMETER_ALIASES = {
    "learning_rate": "model.learning_rate",
    "batch_size": "data.batch_size",
    "max_batch_seconds": "data.max_batch_seconds",
    "max_steps": "trainer.max_steps",
    "max_epochs": "trainer.max_epochs",
    "max_time": "trainer.max_time",
    "precision": "trainer.precision",
    "model_name_or_path": "model.model_name_or_path",
    "num_workers": "data.num_workers",
    # the seed's decoding settings: the model folder carries the LM and its settings
    "lm_path": "decoding.lm",
    "beam_width": "decoding.beam_width",
}
#: The channel an LM can come in (``SM_CHANNEL_LM``): ``lm_path`` names a file in it, or it
#: holds one LM file (:data:`LM_SUFFIXES`).
LM_CHANNEL = "lm"
LM_SUFFIXES = (".arpa", ".bin", ".binary", ".klm", ".mmap")
#: Logged metric -> name printed for SageMaker's metric definitions (HPO on ``eval_wer``).
PRINTED_METRICS = {"val/wer": "eval_wer", "val/cer": "eval_cer", "val/loss": "eval_loss"}
#: Regular expressions for ``MetricDefinitions`` (one capture group: the value).
METRIC_DEFINITIONS = {
    name: rf"{name}=([0-9.]+)" for name in (*PRINTED_METRICS.values(), "train_loss")
}


def metric_line(metrics: dict[str, float], step: int, epoch: int) -> str:
    """The printed line for the metrics present (non-finite values are left out)."""
    parts = [f"step={step}", f"epoch={epoch}"]
    for name, value in metrics.items():
        if math.isfinite(value):
            parts.append(f"{name}={value:.6f}")
    return " ".join(parts)


#: Where a job's logger writes, under ``SM_OUTPUT_DATA_DIR`` (SageMaker's ``output.tar.gz``).
LOGS = "logs"
#: Loggers whose folder is ``init_args.save_dir``.
SAVE_DIR_LOGGERS = ("TensorBoardLogger", "CSVLogger")
#: Hyperparameters the contract itself reads instead of passing them on.
#: ``config``: a YAML file, relative to the source dir (e.g. ``configs/quickstart.yaml``).
#: ``<channel>_source``: which file (or ``#split``) inside a channel folder to read.
CONFIG_HYPERPARAMETER = "config"
SOURCE_SUFFIX = "_source"
#: Hyperparameters SageMaker's framework containers add for themselves.
SAGEMAKER_PREFIX = "sagemaker_"
#: Port of the torchrun rendezvous on the first host when SageMaker does not name one.
DEFAULT_MASTER_PORT = 29500
#: The environment variable naming the rendezvous port (``DEFAULT_MASTER_PORT`` when unset).
MASTER_PORT_ENV = "SM_MASTER_PORT"
#: The environment variable holding a JSON map host name -> address, for networks where the
#: names of ``SM_HOSTS`` do not resolve (tests running every host on 127.0.0.1). SageMaker does
#: not set it: there the first host's name is the rendezvous address.
HOST_ADDRESSES_ENV = "ASR_LIGHTNING_HOST_ADDRESSES"
#: Names a manifest is looked for under, per channel, when a channel holds several files.
_PREFERRED_STEMS = {
    "train": ("train",),
    "eval": ("validation", "valid", "dev", "eval", "test"),
    "test": ("test", "eval"),
}
#: Common Voice split read from a channel that is a release folder.
_CV_SPLIT = {"train": "train", "eval": "dev", "test": "test"}


@dataclass(frozen=True)
class TrainingContract:
    """What a SageMaker training container tells the entry point."""

    channels: dict[str, str]
    """Channel name -> local folder (``SM_CHANNEL_<NAME>``, names lower-cased)."""
    model_dir: str
    """``SM_MODEL_DIR``: uploaded as ``model.tar.gz`` at the end of the job."""
    output_data_dir: str
    """``SM_OUTPUT_DATA_DIR``: uploaded as ``output.tar.gz`` (logs, reports)."""
    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    """Synced with ``CheckpointConfig.S3Uri``; a restarted job resumes from here."""
    hosts: tuple[str, ...] = ("algo-1",)
    """``SM_HOSTS``: every instance of the job; the first is the rendezvous host."""
    current_host: str = "algo-1"
    """``SM_CURRENT_HOST``: this instance."""
    num_gpus: int = 0
    """``SM_NUM_GPUS``: GPUs on this instance."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """``SM_HPS`` merged with the ``--key value`` arguments (the arguments win)."""
    master_port: int = DEFAULT_MASTER_PORT
    """``SM_MASTER_PORT``: port of the rendezvous on the first host."""
    host_addresses: dict[str, str] = field(default_factory=dict)
    """``ASR_LIGHTNING_HOST_ADDRESSES``: host name -> address to reach it at; empty: the names."""

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def processes_per_node(self) -> int:
        return max(self.num_gpus, 1)

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.processes_per_node

    @property
    def master_addr(self) -> str:
        """Where the rendezvous runs: the first host, or its address in ``host_addresses``."""
        return self.host_addresses.get(self.hosts[0], self.hosts[0])


def contract_from_env(
    env: Mapping[str, str], argv: Sequence[str] = (), checkpoint_dir: str | None = None
) -> TrainingContract:
    """Reads the training contract from a SageMaker container's environment.

    Args:
        env: The environment (``os.environ`` in the entry point).
        argv: The entry script's arguments: SageMaker passes each hyperparameter as
            ``--key value``.
        checkpoint_dir: Local checkpoint folder; ``/opt/ml/checkpoints`` when ``None``.
    """
    try:
        model_dir, output_dir = env["SM_MODEL_DIR"], env["SM_OUTPUT_DATA_DIR"]
    except KeyError as err:
        raise ConfigError(
            f"{err.args[0]} is not set: sagemaker_entry/train.py runs inside a SageMaker "
            "training container (or set SM_MODEL_DIR, SM_OUTPUT_DATA_DIR, SM_CHANNEL_TRAIN)"
        ) from err
    channels = {
        key[len("SM_CHANNEL_") :].lower(): value
        for key, value in env.items()
        if key.startswith("SM_CHANNEL_")
    }
    hosts = tuple(_json(env, "SM_HOSTS", ["algo-1"]))
    current = env.get("SM_CURRENT_HOST", hosts[0])
    if current not in hosts:
        raise ConfigError(f"SM_CURRENT_HOST {current!r} is not one of SM_HOSTS {list(hosts)}")
    hyperparameters = {**_json(env, "SM_HPS", {}), **parse_cli_hyperparameters(argv)}
    return TrainingContract(
        channels=channels,
        model_dir=model_dir,
        output_data_dir=output_dir,
        checkpoint_dir=checkpoint_dir or DEFAULT_CHECKPOINT_DIR,
        hosts=hosts,
        current_host=current,
        num_gpus=int(env.get("SM_NUM_GPUS") or 0),
        hyperparameters=hyperparameters,
        master_port=_port(env),
        host_addresses=_host_addresses(env, hosts),
    )


def _port(env: Mapping[str, str]) -> int:
    value = env.get(MASTER_PORT_ENV) or str(DEFAULT_MASTER_PORT)
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"{MASTER_PORT_ENV} must be a TCP port (1-65535), got {value!r}")
    return port


def _host_addresses(env: Mapping[str, str], hosts: Sequence[str]) -> dict[str, str]:
    """The ``ASR_LIGHTNING_HOST_ADDRESSES`` map; it must give the rendezvous host's address."""
    addresses = _json(env, HOST_ADDRESSES_ENV, {})
    if not isinstance(addresses, dict) or not all(
        isinstance(name, str) and isinstance(address, str) and address
        for name, address in addresses.items()
    ):
        raise ConfigError(
            f"{HOST_ADDRESSES_ENV} must be a JSON object of host name -> address, such as "
            f'{{"algo-1": "127.0.0.1"}}; got {env[HOST_ADDRESSES_ENV]!r}'
        )
    if addresses and hosts[0] not in addresses:
        raise ConfigError(
            f"{HOST_ADDRESSES_ENV} names no address for {hosts[0]!r}, the first of SM_HOSTS "
            f"(where the rendezvous runs): add it, or unset {HOST_ADDRESSES_ENV}"
        )
    return addresses


def _json(env: Mapping[str, str], key: str, default: Any) -> Any:
    if not env.get(key):
        return default
    try:
        return json.loads(env[key])
    except json.JSONDecodeError as err:
        raise ConfigError(f"{key} is not valid JSON: {env[key]!r}") from err


def parse_cli_hyperparameters(argv: Sequence[str]) -> dict[str, Any]:
    """``["--learning_rate", "0.001", "--config", "configs/x.yaml"]`` -> a dict.

    Values are decoded as JSON where they are JSON (``0.001``, ``true``, ``"text"``) and kept as
    strings otherwise, the way SageMaker's drivers encode them.
    """
    if len(argv) % 2:
        raise ConfigError(f"hyperparameters must come as --key value pairs, got {list(argv)}")
    parsed: dict[str, Any] = {}
    for key, value in zip(argv[::2], argv[1::2], strict=True):
        if not key.startswith("--"):
            raise ConfigError(f"expected a --key before {value!r}, got {key!r}")
        parsed[key[2:]] = _decode(value)
    return parsed


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def resolve_channel(folder: str | Path, channel: str, file: str | None = None) -> str:
    """The data source spec for a channel folder (what ``data.train`` etc. is set to).

    A channel holds one of: a Common Voice release folder, a ``save_to_disk`` dataset, or
    manifests/tables (with their audio). ``file`` names the file (or ``#split``) to read.

    Args:
        folder: The channel's local folder.
        channel: The channel's name (``train``, ``eval``, ``test``), to pick among manifests.
        file: A file inside the folder, or ``#<split>``; chosen automatically when ``None``.
    """
    root = Path(folder)
    if file:
        return f"{root}{file}" if file.startswith("#") else str(root / file)
    if (root / "clips").is_dir():
        split = _CV_SPLIT.get(channel, "train")
        if (root / f"{split}.tsv").is_file():
            return f"{root}#{split}"
    if is_saved_dataset(root):
        return str(root)
    suffixes = MANIFEST_SUFFIXES + TABLE_SUFFIXES + PARQUET_SUFFIXES
    candidates = sorted(p for p in root.iterdir() if p.suffix.lower() in suffixes)
    if len(candidates) == 1:
        return str(candidates[0])
    for stem in _PREFERRED_STEMS.get(channel, (channel,)):
        for path in candidates:
            if path.stem.lower() == stem:
                return str(path)
    raise ConfigError(
        f"channel {channel!r} ({root}) holds {len(candidates)} manifests "
        f"({', '.join(p.name for p in candidates) or 'none'}) and no Common Voice release "
        f"({', '.join(CV_SPLITS[:3])}.tsv + clips/) or save_to_disk dataset: name the file with "
        f"the hyperparameter {channel}{SOURCE_SUFFIX}"
    )


def resolve_lm(folder: str | Path, file: str | None = None) -> str:
    """The LM file of the ``lm`` channel: ``file`` inside it, or its one LM file.

    Raises:
        ConfigError: the file is missing, or the folder holds no LM file or several.
    """
    root = Path(folder)
    if file:
        path = root / file
        if not path.is_file():
            present = ", ".join(sorted(p.name for p in root.iterdir())) or "nothing"
            raise ConfigError(
                f"lm_path {file!r} is not in the lm channel {root} (it holds {present}): name "
                "a file of the channel"
            )
        return str(path)
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in LM_SUFFIXES)
    if len(found) != 1:
        raise ConfigError(
            f"the lm channel {root} holds {len(found)} LM files "
            f"({', '.join(p.name for p in found) or 'none'} with {', '.join(LM_SUFFIXES)}): "
            "name the one to use with the hyperparameter lm_path"
        )
    return str(found[0])


def lightning_args(
    contract: TrainingContract, source_dir: str | Path, resume: bool = True
) -> list[str]:
    """The ``asr-lightning fit ...`` arguments for this job (without the program name).

    Order matters to LightningCLI: the config file first, then the contract's settings, then
    the hyperparameters, so a hyperparameter can override anything.

    Args:
        contract: The job's contract.
        source_dir: The uploaded source folder, which relative ``config`` paths are read from.
        resume: Resume from ``<checkpoint_dir>/last.ckpt`` when it exists.
    """
    hps = {k: v for k, v in contract.hyperparameters.items() if not k.startswith(SAGEMAKER_PREFIX)}
    sources = {k[: -len(SOURCE_SUFFIX)]: hps.pop(k) for k in list(hps) if k.endswith(SOURCE_SUFFIX)}
    args = ["fit"]
    config = hps.pop(CONFIG_HYPERPARAMETER, None)
    config_path = None
    if config:
        path = Path(config)
        config_path = path if path.is_absolute() else Path(source_dir) / path
        args += ["--config", str(config_path)]
    for channel, folder in sorted(contract.channels.items()):
        if channel in CHANNEL_ARGUMENTS:
            spec = resolve_channel(folder, channel, sources.get(channel))
            args += [f"--{CHANNEL_ARGUMENTS[channel]}", spec]
    lm_path = hps.pop("lm_path", None)
    if LM_CHANNEL in contract.channels:
        args += ["--decoding.lm", resolve_lm(contract.channels[LM_CHANNEL], lm_path)]
    elif lm_path:
        path = Path(str(lm_path))
        args += ["--decoding.lm", str(path if path.is_absolute() else Path(source_dir) / path)]
    args += [
        "--trainer.default_root_dir",
        str(Path(contract.output_data_dir) / "lightning"),
        "--checkpoint.dirpath",
        contract.checkpoint_dir,
        "--hf_export.dirpath",
        str(Path(contract.model_dir) / HF_SUBDIR),
        "--trainer.callbacks+=asr_lightning.training.callbacks.MetricLines",
    ]
    if _logs_to_a_folder(config_path):  # into output.tar.gz, not a folder SageMaker drops
        args += ["--trainer.logger.init_args.save_dir", str(Path(contract.output_data_dir) / LOGS)]
    args += _compute_args(contract)
    args += hyperparameter_args(hps)
    last = Path(contract.checkpoint_dir) / LAST_CHECKPOINT
    if resume and last.is_file():
        args += ["--ckpt_path", str(last)]
    return args


def _logs_to_a_folder(config: Path | None) -> bool:
    """Whether the config's logger is one with a ``save_dir`` (TensorBoard, CSV; the default)."""
    if config is None:
        return True  # the CLI's default logger: TensorBoard
    try:
        trainer = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("trainer") or {}
    except (OSError, yaml.YAMLError):
        return False  # LightningCLI reports the unreadable config itself
    logger = trainer.get("logger", True)
    if logger is True or logger is None:
        return True
    if isinstance(logger, dict):
        return logger.get("class_path", "").rsplit(".", 1)[-1] in SAVE_DIR_LOGGERS
    return False


def _compute_args(contract: TrainingContract) -> list[str]:
    args = []
    if contract.num_gpus:
        args += ["--trainer.accelerator", "gpu"]
    args += ["--trainer.devices", str(contract.processes_per_node)]
    args += ["--trainer.num_nodes", str(len(contract.hosts))]
    if contract.world_size > 1:
        args += ["--trainer.strategy", "ddp"]
    return args


def hyperparameter_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """LightningCLI overrides for hyperparameters (short names through the alias table)."""
    args: list[str] = []
    for name, value in hyperparameters.items():
        if name.startswith(SAGEMAKER_PREFIX):
            continue
        key = HYPERPARAMETER_ALIASES.get(name, name)
        if "." not in key:
            raise ConfigError(
                f"unknown hyperparameter {name!r}: use one of "
                f"{', '.join(sorted(HYPERPARAMETER_ALIASES))}, {CONFIG_HYPERPARAMETER}, "
                f"<channel>{SOURCE_SUFFIX}, or a LightningCLI key such as trainer.max_epochs"
            )
        args += [f"--{key}", _cli_value(value)]
        if key == "data.batch_size":
            args += ["--data.max_batch_seconds", "null"]
    return args


def _cli_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def under_torchrun(env: Mapping[str, str]) -> bool:
    """True in a process torchrun started (it sets these for every worker)."""
    return "TORCHELASTIC_RUN_ID" in env or "LOCAL_RANK" in env


def torchrun_command(contract: TrainingContract, script: str, argv: Sequence[str]) -> list[str]:
    """``torchrun`` starting ``script argv`` once per GPU on this host, ranked among the hosts.

    The rendezvous is on the first host (:attr:`TrainingContract.master_addr`), port
    :attr:`TrainingContract.master_port`.

    Args:
        contract: The job's contract (hosts, this host, GPUs).
        script: The entry script to run in each worker.
        argv: The entry script's arguments, passed on unchanged.
    """
    return [
        "torchrun",
        f"--nnodes={len(contract.hosts)}",
        f"--nproc_per_node={contract.processes_per_node}",
        f"--node_rank={contract.node_rank}",
        f"--master_addr={contract.master_addr}",
        f"--master_port={contract.master_port}",
        script,
        *argv,
    ]


def needs_launcher(contract: TrainingContract, env: Mapping[str, str]) -> bool:
    """Several processes are wanted and nobody has started them yet."""
    return contract.world_size > 1 and not under_torchrun(env)
