"""Helpers of the end-to-end training tests: tiny run configurations and test-only callbacks.

The callbacks are handed to ``asr-lightning`` subprocesses through the config
(``trainer.callbacks``), so this module must import without pytest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = REPO_ROOT / "data" / "quickstart"
#: Seconds a stalled run waits to be killed.
STALL_S = 600
#: Seconds a CLI subprocess may take (the machine is shared: generous).
SUBPROCESS_TIMEOUT_S = 300
#: A tiny Parakeet CTC encoder without any dropout, so that a run is a function of its seed and
#: data order only (Lightning does not checkpoint the global RNG a resumed run would need).
TINY_PARAKEET = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "subsampling_conv_channels": 8,
    "num_mel_bins": 16,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "layerdrop": 0.0,
}


def write_manifest(path: Path, split: str, count: int, text: str | None = None) -> Path:
    """The first ``count`` quickstart utterances of ``split``, with absolute audio paths.

    Args:
        path: The manifest to write.
        split: ``train``, ``validation`` or ``test`` of data/quickstart.
        count: Utterances to keep.
        text: A transcript replacing every original one.
    """
    lines = (QUICKSTART / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    rows = []
    for line in lines:
        row = json.loads(line)
        row["audio_filepath"] = str(QUICKSTART / row["audio_filepath"])
        if text is not None:
            row["text"] = text
        rows.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def manifest_ids(path: Path) -> list[str]:
    """The utterance ids of a manifest, in order."""
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def tiny_config(directory: Path, train: int = 40, evaluation: int = 12, **overrides: Any) -> Path:
    """Write a configuration training a tiny Parakeet from scratch on quickstart utterances.

    Logs go to ``<directory>/runs/tiny/version_N``. ``overrides`` are merged into the sections
    (``trainer={"max_steps": 4}``).

    Args:
        directory: Where the manifests, the config and the runs go.
        train: Training utterances.
        evaluation: Validation = test = predict utterances.
        **overrides: Section name -> settings that replace the defaults below.
    """
    directory.mkdir(parents=True, exist_ok=True)
    train_manifest = write_manifest(directory / "train.jsonl", "train", train)
    eval_manifest = write_manifest(directory / "eval.jsonl", "validation", evaluation)
    runs = str(directory / "runs")
    config: dict[str, dict[str, Any] | int] = {
        "seed_everything": 1,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 8,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": runs,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": runs, "name": "tiny"},
            },
        },
        "model": {
            "model_name_or_path": None,
            "model_type": "parakeet_ctc",
            "config_overrides": TINY_PARAKEET,
            "learning_rate": 3e-3,
            "warmup_ratio": 0.25,
        },
        "data": {
            "train": str(train_manifest),
            "validation": str(eval_manifest),
            "test": str(eval_manifest),
            "predict": str(eval_manifest),
            "min_duration_s": 0.3,
            "batch_size": 4,
            "max_batch_seconds": None,
            "num_buckets": 2,
            "num_workers": 0,
            "duration_cache": None,
        },
    }
    for section, settings in overrides.items():
        config[section] = {**config.get(section, {}), **settings}  # type: ignore[dict-item]
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_dirs(directory: Path) -> list[Path]:
    """The version folders of the runs of a :func:`tiny_config`, oldest first."""
    folders = (directory / "runs" / "tiny").glob("version_*")
    return sorted(folders, key=lambda folder: int(folder.name.split("_")[1]))


def cli_command(*args: str) -> list[str]:
    """The ``asr-lightning`` command line of this interpreter's environment."""
    return [sys.executable, "-m", "asr_lightning.cli", *args]


def cli_env() -> dict[str, str]:
    """Environment of CLI subprocesses: offline, and this repository importable (callbacks)."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_cli(*args: str, timeout: float = SUBPROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``asr-lightning ARGS`` in a subprocess, capturing its output."""
    return subprocess.run(
        cli_command(*args),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def run_and_kill(*args: str, marker: Path, timeout: float = SUBPROCESS_TIMEOUT_S) -> None:
    """Start ``asr-lightning ARGS``, wait for ``marker`` (see :class:`StallAtStep`), SIGKILL it."""
    process = subprocess.Popen(
        cli_command(*args),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
    )
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"the run ended before stalling:\n{process.stdout.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("the run did not reach the step to stall at in time")
            time.sleep(0.1)
    finally:
        process.kill()  # SIGKILL: no exception handler, no checkpoint on exit
        process.wait()
        process.stdout.close()


def last_scalar(run_dir: Path, tag: str) -> float:
    """The last value a run logged to TensorBoard under ``tag``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.Scalars(tag)[-1].value


def read_records(directory: Path) -> dict[int, list[dict[str, Any]]]:
    """``{rank: [record, ...]}`` written by :class:`RecordBatches` into ``directory``."""
    records = {}
    for path in sorted(directory.glob("rank*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        records[int(path.stem.removeprefix("rank"))] = [json.loads(line) for line in lines]
    return records


class RecordBatches(pl.Callback):
    """Appends one JSON line per trained batch to ``<directory>/rank<r>.jsonl``.

    Each line is ``{"epoch", "batch_idx", "step", "ids", "lr"}``, written and flushed as soon as
    the batch is trained, so a killed run leaves every batch it trained on record.

    Args:
        directory: Folder of the per-rank files.
    """

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "epoch": trainer.current_epoch,
            "batch_idx": batch_idx,
            "step": trainer.global_step,
            "ids": list(batch["ids"]),
            "lr": [group["lr"] for group in trainer.optimizers[0].param_groups],
        }
        with (self.directory / f"rank{trainer.global_rank}.jsonl").open("a") as out:
            out.write(json.dumps(record) + "\n")


class StallAtStep(pl.Callback):
    """Stops making progress (sleeps) before training the batch after optimizer step ``step``.

    ModelCheckpoint saves in ``on_train_batch_end`` after every other callback, so stalling at the
    start of the next batch guarantees that the checkpoint of ``step`` is on disk; the test then
    kills the process with SIGKILL, like a preempted machine.

    Args:
        step: The optimizer step after which to stall.
        marker: File created when stalling, for the test to wait on.
    """

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(STALL_S)


def load_handler(model_dir: Path, name: str = "sm_inference_handler") -> Any:
    """The SageMaker handler as the container imports it: ``code/inference.py`` of a model dir."""
    spec = importlib.util.spec_from_file_location(name, model_dir / "code" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ several processes
#: The tolerance two runs' weights agree within when only the processes' layout differs.
WEIGHT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it: parallel tests do not collide)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def distributed_env(**extra: str) -> dict[str, str]:
    """:func:`cli_env` for DDP on CPU: no GPU, one thread per process (2 processes on 2 cores
    compute the same sums in the same order), and this environment's ``torchrun`` first on PATH.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        **cli_env(),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PATH": path,
        **extra,
    }


def recorder_callback(directory: Path) -> dict[str, Any]:
    """The ``trainer.callbacks`` entry of :class:`RecordBatches` writing into ``directory``."""
    return {
        "class_path": f"{RecordBatches.__module__}.{RecordBatches.__name__}",
        "init_args": {"directory": str(directory)},
    }


def run_together(
    commands: list[tuple[list[str], dict[str, str]]],
    logs: Path,
    cwd: Path | list[Path] = REPO_ROOT,
    timeout: float = SUBPROCESS_TIMEOUT_S,
) -> list[str]:
    """Start every ``(command, env)`` at once (the nodes of one job), wait for all of them.

    ``cwd`` is the working directory of all of them, or a list of one per command.

    Output goes to files in ``logs`` (a pipe nobody reads would block a process that its peers
    wait on). On a failure or the timeout every process is killed with all it started (torchrun
    puts its workers in sessions of their own), and the assertion shows the tail of each one's
    output.

    Returns:
        Each process's output (stdout and stderr together), in the order of ``commands``.
    """
    logs.mkdir(parents=True, exist_ok=True)
    folders = cwd if isinstance(cwd, list) else [cwd] * len(commands)
    processes = []
    for index, ((command, env), folder) in enumerate(zip(commands, folders, strict=True)):
        with (logs / f"process{index}.log").open("w") as out:
            processes.append(
                subprocess.Popen(command, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
            )
    deadline, late = time.monotonic() + timeout, False
    try:
        while any(process.poll() is None for process in processes):
            late = time.monotonic() > deadline
            if late or any(process.returncode not in (None, 0) for process in processes):
                break
            time.sleep(0.5)
    finally:
        for process in processes:
            _kill_tree(process)
    outputs = [(logs / f"process{i}.log").read_text(errors="replace") for i in range(len(commands))]
    codes = [process.returncode for process in processes]
    if codes != [0] * len(codes):
        tails = "\n".join(
            f"--- process {i} ({' '.join(commands[i][0][:4])} ...) exited {code}:\n{out[-3000:]}"
            for i, (code, out) in enumerate(zip(codes, outputs, strict=True))
        )
        why = f"still ran after {timeout:.0f} s (killed: -9)" if late else "failed"
        raise AssertionError(f"a process {why}:\n{tails}")
    return outputs


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process that still runs and every process under it; reap it."""
    import psutil

    if process.poll() is None:
        try:
            tree = [psutil.Process(process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for member in tree:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
    process.wait()


def assert_once_per_epoch(
    records: dict[int, list[dict[str, Any]]], ranks: int, epochs: int
) -> set[str]:
    """Check :class:`RecordBatches` records of a DDP run: every rank trained the same number of
    batches, and every epoch saw the same items, each exactly once across the ranks.

    Returns:
        The items of an epoch.
    """
    assert sorted(records) == list(range(ranks)), f"ranks on record: {sorted(records)}"
    counts = {rank: len(lines) for rank, lines in records.items()}
    assert len(set(counts.values())) == 1, f"batches per rank differ: {counts}"
    epoch_items = []
    for epoch in range(epochs):
        seen: dict[str, int] = {}
        for lines in records.values():
            for line in lines:
                if line["epoch"] == epoch:
                    for uid in line["ids"]:
                        seen[uid] = seen.get(uid, 0) + 1
        twice = sorted(uid for uid, count in seen.items() if count > 1)
        assert seen and not twice, f"epoch {epoch}: {len(seen)} items, seen twice: {twice}"
        epoch_items.append(set(seen))
    assert all(items == epoch_items[0] for items in epoch_items), "epochs saw different items"
    return epoch_items[0]


def batch_ids(records: dict[int, list[dict[str, Any]]]) -> dict[int, list[list[str]]]:
    """``{rank: [ids of each trained batch, in order]}`` of :class:`RecordBatches` records."""
    return {rank: [line["ids"] for line in lines] for rank, lines in records.items()}


def assert_same_weights(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Two state dicts hold the same tensors within :data:`WEIGHT_TOLERANCE`."""
    import torch

    assert sorted(actual) == sorted(expected), "the state dicts hold different tensors"
    for name, tensor in expected.items():
        torch.testing.assert_close(
            actual[name], tensor, msg=lambda text, name=name: f"{name}: {text}", **WEIGHT_TOLERANCE
        )


def checkpoint_weights(path: Path) -> dict[str, Any]:
    """The ``state_dict`` of a Lightning checkpoint."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def hf_weights(folder: Path) -> dict[str, Any]:
    """The tensors of a Hugging Face model folder's ``model.safetensors``."""
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")
