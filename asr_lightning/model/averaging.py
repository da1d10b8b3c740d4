"""Checkpoint averaging: the mean of several checkpoints' weights, for evaluation and export.

Averaging the weights of the last or best few checkpoints of one run (NeMo's
``checkpoint_averaging.py``, icefall's ``--avg N``) usually scores a little better than any one
of them. :class:`RunningAverage` adds state dicts one at a time into a float64 sum, so only the
sum and the checkpoint being read are in memory, never K copies. Floating-point tensors are
averaged; integer and boolean ones (BatchNorm's ``num_batches_tracked``) are copied from the last
checkpoint added.

:func:`average_checkpoints` does it for ``fit`` checkpoints: it checks that they hold the same
tensors and were trained with the same model type, vocabulary and input level, and writes a
checkpoint that ``test --ckpt_path``, ``transcribe`` and ``export`` read like any other. It holds
the averaged weights and what rebuilds the model (hyperparameters), not the optimizer,
scheduler or loop state: ``fit`` cannot resume from it (:func:`is_averaged_checkpoint`).

No Lightning here: checkpoints are read as the dictionaries ``torch.save`` wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from asr_lightning.errors import CheckpointMismatchError, ConfigError, ModelError

#: Where an averaged checkpoint records what it is the average of (absent from ``fit``'s).
AVERAGED_KEY = "asr_lightning_averaged"
#: What an averaged checkpoint keeps of the last checkpoint averaged, besides the weights.
KEPT_KEYS = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "hparams_name",
    "hyper_parameters",
    "asr_lightning",
)
#: Hyperparameters every averaged checkpoint must share (tensor shapes are checked too).
SHARED_HPARAMS = ("model_type", "vocab", "input_level")
#: The stem ``ModelCheckpoint(save_last=True)`` gives its copies: not ranked by their score,
#: which can be older than their weights (``last.ckpt`` is also written between validations).
LAST_STEM = "last"
#: ``ModelCheckpoint``'s state key spells its mode: ``ModelCheckpoint{'monitor': .., 'mode': 'min'``
_MODE = re.compile(r"'mode': '(min|max)'")
#: How many mismatching tensor names an error lists.
SHOWN_NAMES = 5


class RunningAverage:
    """The mean of state dicts added one at a time, checked to hold the same tensors.

    Floating-point (and complex) tensors are summed in float64 and the mean is cast back to
    each tensor's dtype; other tensors are copied from the last state dict added.
    """

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []
        """The name of each state dict added (a file name), for error messages."""
        self._sums: dict[str, torch.Tensor] = {}
        self._copied: dict[str, torch.Tensor] = {}
        self._layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}

    def add(self, state: Mapping[str, Any], name: str) -> None:
        """Adds ``state`` (its tensors; other values are ignored).

        Raises:
            CheckpointMismatchError: ``state`` does not hold the tensors (names, shapes, dtypes)
                of the first one added.
        """
        tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
        layout = {key: (tuple(t.shape), t.dtype) for key, t in tensors.items()}
        if self.count:
            self._check(layout, name)
        else:
            self._layout = layout
        for key, tensor in tensors.items():
            if _averaged(tensor):
                summand = tensor.detach().to(device="cpu", dtype=torch.float64)
                if key in self._sums:
                    self._sums[key] += summand
                else:
                    self._sums[key] = summand.clone()
            else:
                self._copied[key] = tensor.detach().to("cpu").clone()
        self.count += 1
        self.names.append(name)

    def result(self) -> dict[str, torch.Tensor]:
        """The averaged state dict, in the first state dict's order and dtypes."""
        if not self.count:
            raise ConfigError("nothing to average: give at least one checkpoint")
        out = {}
        for key, (_, dtype) in self._layout.items():
            if key in self._sums:
                out[key] = (self._sums[key] / self.count).to(dtype)
            else:
                out[key] = self._copied[key]
        return out

    def _check(self, layout: Mapping[str, tuple[tuple[int, ...], torch.dtype]], name: str) -> None:
        first = self.names[0]
        missing = [key for key in self._layout if key not in layout]
        extra = [key for key in layout if key not in self._layout]
        problems = []
        if missing:
            problems.append(f"lacks {len(missing)} tensor(s) of {first}: {_some(missing)}")
        if extra:
            problems.append(f"has {len(extra)} tensor(s) {first} lacks: {_some(extra)}")
        for key, (shape, dtype) in layout.items():
            expected = self._layout.get(key)
            if expected is not None and expected != (shape, dtype):
                problems.append(
                    f"{key} is {_describe(shape, dtype)} there, {_describe(*expected)} in {first}"
                )
        if problems:
            raise CheckpointMismatchError(
                f"cannot average {name} with {first}: {name} " + "; ".join(problems[:SHOWN_NAMES])
                + ".\nAverage checkpoints of one model: the same architecture, size and "
                "vocabulary (e.g. the checkpoints of one run)"
            )  # fmt: skip


def average_state_dicts(states: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The mean of ``(name, state dict)`` pairs (see :class:`RunningAverage`); each pair is
    released before the next one is read when ``states`` is a generator."""
    average = RunningAverage()
    for name, state in states:
        average.add(state, name)
    return average.result()


@dataclass(frozen=True)
class CheckpointInfo:
    """What a ``fit`` checkpoint says about itself (read without loading its tensors)."""

    path: Path
    step: int
    """The optimizer step it was saved at (``global_step``)."""
    monitor: str | None
    """The metric its ``ModelCheckpoint`` ranks by (``val/wer``), ``None`` without one."""
    score: float | None
    """Its value of ``monitor`` when it was saved."""
    mode: Literal["min", "max"] | None
    """Whether lower (``min``) or higher scores are better."""
    averaged: bool
    """Written by :func:`average_checkpoints`."""

    @property
    def is_last_copy(self) -> bool:
        """A ``last.ckpt`` (``last-v1.ckpt``...): its score may predate its weights."""
        return self.path.stem.split("-")[0] == LAST_STEM


def read_info(path: str | Path) -> CheckpointInfo:
    """Step, monitored metric and score of a ``fit`` checkpoint (its tensors stay on disk).

    Raises:
        ModelError: ``path`` is not a readable checkpoint.
    """
    checkpoint = _load(Path(path))
    monitor = score = mode = None
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if "Checkpoint" in str(key) and isinstance(state, dict) and state.get("monitor"):
            monitor = state["monitor"]
            current = state.get("current_score")
            score = None if current is None else float(current)
            found = _MODE.search(str(key))
            mode = found.group(1) if found else None
            break
    return CheckpointInfo(
        Path(path),
        int(checkpoint.get("global_step", 0)),
        monitor,
        score,
        mode,  # type: ignore[arg-type]
        AVERAGED_KEY in checkpoint,
    )


def find_checkpoints(sources: Sequence[str | Path]) -> list[Path]:
    """``.ckpt`` files given, and those in folders given (a run folder's ``checkpoints/`` too),
    leaving out averaged checkpoints found in folders.

    Raises:
        ConfigError: a source does not exist or a folder holds no checkpoint.
    """
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_file():
            found.append(source)
            continue
        if not source.is_dir():
            raise ConfigError(f"{source} is neither a checkpoint nor a folder of checkpoints")
        folder = source / "checkpoints" if (source / "checkpoints").is_dir() else source
        inside = [path for path in sorted(folder.glob("*.ckpt")) if not read_info(path).averaged]
        if not inside:
            raise ConfigError(
                f"no .ckpt checkpoint in {folder}; give checkpoint files or a run folder "
                "(<log dir>/version_N, whose checkpoints/ fit writes)"
            )
        found += inside
    return list(dict.fromkeys(found))  # each once


def select_best(infos: Sequence[CheckpointInfo], k: int) -> list[CheckpointInfo]:
    """The ``k`` best checkpoints by their monitored score, oldest (lowest step) first.

    ``last*.ckpt`` copies are left out: their recorded score can be older than their weights.

    Raises:
        ConfigError: ``k`` < 1, no checkpoint has a score, or they rank by different metrics.
    """
    _check_count("best", k)
    ranked = [info for info in infos if info.score is not None and not info.is_last_copy]
    if not ranked:
        names = ", ".join(info.path.name for info in infos) or "(none)"
        raise ConfigError(
            f"--best: none of {names} records a monitored score (a checkpoint saved after a "
            "validation, by ModelCheckpoint with a monitor); give the checkpoints to average"
        )
    kinds = {(info.monitor, info.mode) for info in ranked}
    if len(kinds) > 1 or None in {mode for _, mode in kinds}:
        raise ConfigError(
            "--best: the checkpoints rank by different or unknown metrics "
            f"{sorted(map(str, kinds))}; give the checkpoints to average"
        )
    ((_, mode),) = kinds
    ranked.sort(key=lambda info: (info.score if mode == "min" else -info.score, -info.step))
    return sorted(_distinct_steps(ranked)[:k], key=lambda info: info.step)


def select_last(infos: Sequence[CheckpointInfo], n: int) -> list[CheckpointInfo]:
    """The ``n`` checkpoints of the highest steps (one per step), oldest first.

    Raises:
        ConfigError: ``n`` < 1.
    """
    _check_count("last", n)
    newest = _distinct_steps(sorted(infos, key=lambda info: -info.step))
    return sorted(newest[:n], key=lambda info: info.step)


@dataclass(frozen=True)
class AverageReport:
    """What :func:`average_checkpoints` wrote."""

    output: Path
    sources: list[Path]
    step: int
    """The ``global_step`` the averaged checkpoint carries: the last source's."""

    def render(self) -> str:
        names = "\n".join(f"  {path}" for path in self.sources)
        return (
            f"averaged the weights of {len(self.sources)} checkpoint(s):\n{names}\n"
            f"into {self.output} (step {self.step}). Optimizer, scheduler and loop state are "
            "dropped: test, transcribe or export it; to train on, fine-tune its Hugging Face "
            "folder (--model.model_name_or_path)"
        )


def average_checkpoints(
    paths: Sequence[str | Path], output: str | Path, selection: str = ""
) -> AverageReport:
    """Writes the checkpoint whose weights are the mean of ``paths``' (see the module).

    Args:
        paths: ``fit`` checkpoints; integer tensors and the step come from the last one.
        output: The checkpoint to write (its folder is created).
        selection: How ``paths`` were chosen (``best 3 by val/wer``), recorded in the output.

    Raises:
        CheckpointMismatchError: the checkpoints do not hold the same tensors, or were trained
            with a different model type, vocabulary or input level.
        ModelError: a path is not a readable checkpoint.
    """
    if not paths:
        raise ConfigError("nothing to average: give at least one checkpoint")
    sources = [Path(path) for path in paths]
    average, first_hparams, last = RunningAverage(), None, {}
    for path in sources:
        checkpoint = _load(path)
        if "state_dict" not in checkpoint:
            raise ModelError(f"{path} holds no state_dict: give checkpoints written by fit")
        hparams = checkpoint.get("hyper_parameters") or {}
        if first_hparams is None:
            first_hparams = hparams
        _check_hparams(first_hparams, hparams, sources[0], path)
        average.add(checkpoint["state_dict"], str(path))
        last = {key: checkpoint[key] for key in KEPT_KEYS if key in checkpoint}
        del checkpoint  # one checkpoint at a time
    averaged = {**last, "state_dict": average.result()}
    averaged[AVERAGED_KEY] = {"sources": [str(p) for p in sources], "selection": selection}
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    torch.save(averaged, partial)
    os.replace(partial, out)  # never a half-written checkpoint, also over a source
    return AverageReport(out, sources, int(last.get("global_step", 0)))


def is_averaged_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` was written by :func:`average_checkpoints` (``False`` for anything that is
    not a readable checkpoint: its reader says what is wrong with it)."""
    try:
        return AVERAGED_KEY in _load(Path(path))
    except ModelError:
        return False


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint with its tensors memory-mapped: read from disk when used, not before."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise ModelError(
            f"cannot read {path} as a checkpoint: {err}\nGive .ckpt files written by "
            "'asr-lightning fit'"
        ) from err


def _check_hparams(first: Mapping[str, Any], other: Mapping[str, Any], a: Path, b: Path) -> None:
    for name in SHARED_HPARAMS:
        if first.get(name) != other.get(name):
            shown = "vocabularies differ" if name == "vocab" else (
                f"{first.get(name)!r} against {other.get(name)!r}"
            )  # fmt: skip
            raise CheckpointMismatchError(
                f"cannot average {b} with {a}: model.{name} differs ({shown}).\nAverage "
                "checkpoints of one model: the same architecture, size and vocabulary (e.g. the "
                "checkpoints of one run)"
            )


def _averaged(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()


def _describe(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    return f"{tuple(shape)} {str(dtype).removeprefix('torch.')}"


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (", ..." if len(names) > SHOWN_NAMES else "")


def _check_count(option: str, count: int) -> None:
    if count < 1:
        raise ConfigError(f"--{option} must be >= 1, got {count}")


def _distinct_steps(infos: Iterable[CheckpointInfo]) -> list[CheckpointInfo]:
    """The first checkpoint of each step (a ``last.ckpt`` often copies a ranked one)."""
    seen: dict[int, CheckpointInfo] = {}
    for info in infos:
        seen.setdefault(info.step, info)
    return list(seen.values())
