"""AdamW with a separate learning rate for the CTC head, and warmup-then-decay schedules."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from asr_lightning.errors import ConfigError
from asr_lightning.model.families import head_module

SchedulerKind = Literal["linear", "cosine", "constant"]
#: What a schedule's length is: the run's optimizer steps, or its budget (the wall-clock limit
#: ``trainer.max_time`` or the steps, whichever runs out first).
ScheduleHorizon = Literal["steps", "budget"]


def parameter_groups(
    model: torch.nn.Module,
    learning_rate: float,
    head_learning_rate: float | None,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """Trainable parameters split by role: encoder vs CTC head, decayed vs not.

    Biases and normalisation weights (1-D tensors) get no weight decay. Frozen parameters
    (e.g. a frozen feature encoder) are left out.

    Args:
        model: a Hugging Face ``*ForCTC`` model.
        learning_rate: learning rate of the encoder (the pretrained part).
        head_learning_rate: learning rate of the CTC head; ``None`` for ``learning_rate``.
        weight_decay: AdamW weight decay of matrices and convolution kernels.

    Returns:
        Optimizer parameter groups, each with a ``name`` (``encoder``, ``encoder_no_decay``,
        ``head``, ``head_no_decay``); empty groups are dropped.
    """
    head_ids = {id(p) for p in head_module(model).parameters()}
    rates = {"encoder": learning_rate, "head": head_learning_rate or learning_rate}
    buckets: dict[str, list[torch.nn.Parameter]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        role = "head" if id(param) in head_ids else "encoder"
        name = role if param.ndim >= 2 else f"{role}_no_decay"
        buckets.setdefault(name, []).append(param)
    return [
        {
            "name": name,
            "params": params,
            "lr": rates[name.split("_")[0]],
            "weight_decay": 0.0 if name.endswith("_no_decay") else weight_decay,
        }
        for name, params in sorted(buckets.items())
    ]


def lr_factor(step: int, warmup_steps: int, total_steps: int, kind: SchedulerKind) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    Linear warmup from 0 over ``warmup_steps``, then constant, linear or cosine decay to 0 at
    ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return _decayed(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)), kind)


def _decayed(decay: float, kind: SchedulerKind) -> float:
    """The factor after warmup, ``decay`` of the way (0 to 1) from the peak to the end."""
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return 1.0 - decay
    return 0.5 * (1.0 + math.cos(math.pi * decay))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: SchedulerKind,
    warmup_ratio: float,
    total_steps: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: warmup over ``warmup_ratio * total_steps``, then ``kind``.

    Args:
        optimizer: the optimizer whose groups' learning rates are scaled.
        kind: ``linear`` or ``cosine`` decay to zero, or ``constant`` after warmup.
        warmup_ratio: fraction of all optimizer steps spent warming up, in [0, 1].
        total_steps: number of optimizer steps of the run (``trainer.estimated_stepping_batches``).
    """
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ConfigError(f"warmup_ratio must lie in [0, 1], got {warmup_ratio}")
    if not math.isfinite(total_steps):
        if kind != "constant" or warmup_ratio > 0:
            raise ConfigError(
                "the training length is unbounded, so warmup_ratio and decaying schedules are "
                "undefined: set trainer.max_steps or trainer.max_epochs, or use "
                "scheduler=constant with warmup_ratio=0"
            )
        total_steps = 1
    total = max(1, int(total_steps))
    factor = functools.partial(
        lr_factor, warmup_steps=int(warmup_ratio * total), total_steps=total, kind=kind
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor_at(progress: float, warmup_ratio: float, kind: SchedulerKind) -> float:
    """Multiplier of the base learning rate at ``progress``, the fraction of the run done.

    The same shape as :func:`lr_factor`, on fractions of the run instead of step counts: linear
    warmup over the first ``warmup_ratio`` of it, then constant, linear or cosine decay to 0 at
    ``progress`` 1. The warmup starts above 0 (at 1% of its span) so no step is wasted.
    """
    progress = min(1.0, max(0.0, progress))
    if progress < warmup_ratio:
        return max(progress / warmup_ratio, 0.01)
    return _decayed((progress - warmup_ratio) / max(1e-12, 1.0 - warmup_ratio), kind)


def budget_progress(
    step: int, total_steps: float, elapsed_s: float, limit_s: float | None
) -> float:
    """Fraction of a run's budget spent: the larger of its steps' and its wall clock's.

    Args:
        step: optimizer steps done.
        total_steps: the run's optimizer steps (``inf`` when only time bounds it).
        elapsed_s: seconds of training so far.
        limit_s: the wall-clock limit in seconds (``None`` when only steps bound it).
    """
    fractions = [step / total_steps] if math.isfinite(total_steps) and total_steps > 0 else []
    if limit_s is not None and limit_s > 0:
        fractions.append(elapsed_s / limit_s)
    if not fractions:
        raise ConfigError(
            "schedule_horizon=budget needs a bound on the run: set trainer.max_time "
            '(e.g. "00:00:30:00") and/or trainer.max_steps or trainer.max_epochs'
        )
    return min(1.0, max(fractions))


def build_budget_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: SchedulerKind,
    warmup_ratio: float,
    progress: Callable[[], float],
) -> torch.optim.lr_scheduler.LambdaLR:
    """Schedule over a run's budget: at each step the factor is ``lr_factor_at(progress())``.

    With a wall-clock limit, the warmup and the decay take the same share of the run on a fast
    machine as on a slow one, and the learning rate reaches zero when the limit stops the run,
    whereas a step schedule sized for a faster machine is cut before it anneals.

    Args:
        optimizer: the optimizer whose groups' learning rates are scaled.
        kind: ``linear`` or ``cosine`` decay to zero, or ``constant`` after warmup.
        warmup_ratio: fraction of the budget spent warming up, in [0, 1].
        progress: the fraction of the budget spent so far (see :func:`budget_progress`),
            called once per optimizer step; it must give every process of a run the same value.
    """
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ConfigError(f"warmup_ratio must lie in [0, 1], got {warmup_ratio}")

    def factor(_step: int) -> float:  # a plain function: LambdaLR does not pickle its state
        return lr_factor_at(progress(), warmup_ratio, kind)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
