"""Parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

from asr_lightning.errors import ConfigError
from asr_lightning.model.optim import (
    budget_progress,
    build_budget_scheduler,
    build_scheduler,
    lr_factor,
    lr_factor_at,
    parameter_groups,
)
from tests.model import tiny


def test_groups_split_head_from_encoder_and_spare_biases_from_decay():
    model = tiny.scratch_module(freeze_feature_encoder=True).model

    groups = {g["name"]: g for g in parameter_groups(model, 1e-4, 1e-3, 0.01)}

    assert set(groups) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    assert groups["head"]["params"] == [model.lm_head.weight]
    assert groups["head_no_decay"]["params"] == [model.lm_head.bias]
    assert (groups["head"]["lr"], groups["encoder"]["lr"]) == (1e-3, 1e-4)
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0
    assert groups["encoder"]["weight_decay"] == 0.01
    trainable = {id(p) for g in groups.values() for p in g["params"]}
    assert all(id(p) not in trainable for p in model.wav2vec2.feature_extractor.parameters())


def test_without_a_head_rate_the_head_uses_the_encoder_rate():
    model = tiny.scratch_module().model

    assert {g["lr"] for g in parameter_groups(model, 3e-4, None, 0.0)} == {3e-4}


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_warmup_rises_then_the_schedule_decays(kind):
    factors = [lr_factor(step, 10, 100, kind) for step in range(101)]

    assert factors[0] < factors[5] < factors[10] == 1.0
    if kind == "constant":
        assert factors[100] == 1.0
    else:
        assert factors[100] == 0.0
        assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    if kind == "cosine":
        assert factors[55] == pytest.approx(0.5)


def test_the_scheduler_scales_every_group():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    groups = [{"params": params[:1], "lr": 1.0}, {"params": params[1:]}]
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    scheduler = build_scheduler(optimizer, "linear", warmup_ratio=0.0, total_steps=4)

    for _ in range(2):
        optimizer.step()
        scheduler.step()

    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])


def test_an_unbounded_run_cannot_decay():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="max_steps"):
        build_scheduler(optimizer, "linear", 0.05, math.inf)
    build_scheduler(optimizer, "constant", 0.0, math.inf)


def test_warmup_ratio_is_a_fraction():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ConfigError, match="warmup_ratio"):
        build_scheduler(optimizer, "linear", 5.0, 100)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_the_budget_shape_matches_the_step_shape(kind):
    for step in range(10, 101):
        assert lr_factor_at(step / 100, 0.1, kind) == pytest.approx(lr_factor(step, 10, 100, kind))
    assert 0.0 < lr_factor_at(0.0, 0.1, kind) < lr_factor_at(0.05, 0.1, kind) < 1.0
    assert lr_factor_at(1.5, 0.1, kind) == lr_factor_at(1.0, 0.1, kind)


def test_the_budget_is_spent_by_whichever_bound_runs_out_first():
    assert budget_progress(50, 100, 60.0, 600.0) == 0.5  # steps ahead of the clock
    assert budget_progress(10, 100, 300.0, 600.0) == 0.5  # the clock ahead of the steps
    assert budget_progress(10, math.inf, 150.0, 600.0) == 0.25  # only time bounds the run
    assert budget_progress(25, 100, 9e9, None) == 0.25  # only steps bound it
    assert budget_progress(200, 100, 0.0, None) == 1.0
    with pytest.raises(ConfigError, match="max_time"):
        budget_progress(0, math.inf, 0.0, None)


def test_the_budget_scheduler_follows_its_clock_not_its_step_count():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    clock = [0.0]
    scheduler = build_budget_scheduler(optimizer, "linear", 0.2, lambda: clock[0])
    seen = []
    for now in (0.1, 0.2, 0.6, 1.0, 1.0):
        clock[0] = now
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])

    assert seen == pytest.approx([0.5, 1.0, 0.5, 0.0, 0.0])
    # the clock (which holds the trainer) is not saved in checkpoints
    assert scheduler.state_dict()["lr_lambdas"] == [None]
    with pytest.raises(ConfigError, match="warmup_ratio"):
        build_budget_scheduler(optimizer, "linear", 2.0, lambda: 0.0)
