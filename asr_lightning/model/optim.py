"""AdamW with a separate learning rate for the CTC head, and warmup-then-decay schedules."""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import torch

from asr_lightning.errors import ConfigError
from asr_lightning.model.families import head_module

SchedulerKind = Literal["linear", "cosine", "constant"]


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
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


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
