"""Checkpoint averaging: the mean of real state dicts, integer buffers, checks and selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asr_lightning.errors import CheckpointMismatchError, ConfigError
from asr_lightning.model.averaging import (
    AVERAGED_KEY,
    average_checkpoints,
    average_state_dicts,
    find_checkpoints,
    is_averaged_checkpoint,
    read_info,
    select_best,
    select_last,
)

HPARAMS = {"model_type": "parakeet_ctc", "vocab": {"<pad>": 0, "a": 1}, "input_level": "none"}
#: How Lightning keys a ModelCheckpoint's state in a checkpoint.
STATE_KEY = "ResumableCheckpoint{'monitor': 'val/wer', 'mode': 'min', 'every_n_train_steps': 0}"


def network(seed: int, out_features: int = 3) -> torch.nn.Module:
    """A linear layer and a BatchNorm (float running stats, an int64 batch counter)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, out_features), torch.nn.BatchNorm1d(out_features))
    net.train()
    for _ in range(seed + 1):  # different running statistics and num_batches_tracked
        net(torch.randn(8, 4))
    return net


def write_checkpoint(path: Path, seed: int, step: int, wer: float | None, **hparams) -> Path:
    """A checkpoint laid out like fit's: weights, hyperparameters, the checkpoint callback."""
    state = {f"model.{key}": value for key, value in network(seed).state_dict().items()}
    callbacks = {} if wer is None else {STATE_KEY: {"monitor": "val/wer", "current_score": wer}}
    checkpoint = {
        "state_dict": state,
        "global_step": step,
        "epoch": 0,
        "hyper_parameters": {**HPARAMS, **hparams},
        "optimizer_states": [{"state": {}}],
        "callbacks": callbacks,
    }
    torch.save(checkpoint, path)
    return path


def test_the_mean_of_three_state_dicts_is_the_hand_computed_one_and_counters_come_from_the_last():
    nets = [network(seed) for seed in range(3)]
    states = [net.state_dict() for net in nets]
    averaged = average_state_dicts((f"net{i}", state) for i, state in enumerate(states))

    assert list(averaged) == list(states[0])
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        by_hand = (states[0][key] + states[1][key] + states[2][key]) / 3
        torch.testing.assert_close(averaged[key], by_hand, rtol=0, atol=1e-7)
        assert averaged[key].dtype == torch.float32
    counter = averaged["1.num_batches_tracked"]
    assert counter.dtype == torch.int64 and int(counter) == 3  # the last one's, not a mean of 1-3
    assert [int(s["1.num_batches_tracked"]) for s in states] == [1, 2, 3]


def test_half_precision_weights_are_summed_in_float64_and_keep_their_dtype():
    states = [{"w": torch.full((2,), value, dtype=torch.bfloat16)} for value in (1.0, 2.0, 2.0)]
    averaged = average_state_dicts(enumerate(states))  # type: ignore[arg-type]
    assert averaged["w"].dtype == torch.bfloat16
    torch.testing.assert_close(averaged["w"], torch.full((2,), 5 / 3, dtype=torch.bfloat16))


def test_mismatched_state_dicts_raise_naming_both_and_the_tensors():
    small, wide = network(0).state_dict(), network(1, out_features=5).state_dict()
    with pytest.raises(CheckpointMismatchError) as raised:
        average_state_dicts([("a.ckpt", small), ("b.ckpt", wide)])
    message = str(raised.value)
    assert "cannot average b.ckpt with a.ckpt" in message
    assert "0.weight is (5, 4) float32 there, (3, 4) float32 in a.ckpt" in message
    assert "the same architecture, size and vocabulary" in message

    fewer = {key: value for key, value in small.items() if key != "0.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"lacks 1 tensor\(s\) of a.ckpt: 0.bias"):
        average_state_dicts([("a.ckpt", small), ("c.ckpt", fewer)])
    with pytest.raises(ConfigError, match="nothing to average"):
        average_state_dicts([])


def test_average_checkpoints_writes_a_weights_only_checkpoint_of_the_mean(tmp_path):
    paths = [write_checkpoint(tmp_path / f"step{s}.ckpt", s, 10 * s, 0.5 - s / 10) for s in (1, 2)]
    report = average_checkpoints(paths, tmp_path / "out" / "averaged.ckpt", "best 2 by val/wer")

    written = torch.load(report.output, weights_only=False)
    sources = [torch.load(path, weights_only=False)["state_dict"] for path in paths]
    for key, value in written["state_dict"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (sources[0][key] + sources[1][key]) / 2)
        else:
            assert torch.equal(value, sources[1][key])
    assert written["global_step"] == report.step == 20
    assert written["hyper_parameters"] == HPARAMS
    assert "optimizer_states" not in written and "callbacks" not in written
    recorded = {"sources": [str(path) for path in paths], "selection": "best 2 by val/wer"}
    assert written[AVERAGED_KEY] == recorded
    assert is_averaged_checkpoint(report.output) and not is_averaged_checkpoint(paths[0])
    assert "Optimizer, scheduler and loop state are dropped" in report.render()


@pytest.mark.parametrize(
    ("hparams", "shown"),
    [
        ({"vocab": {"<pad>": 0, "b": 1}}, "model.vocab differs (vocabularies differ)"),
        ({"model_type": "wav2vec2"}, "model.model_type differs ('parakeet_ctc' against 'wav2vec2"),
    ],
)
def test_checkpoints_of_other_models_raise_naming_the_files(tmp_path, hparams, shown):
    first = write_checkpoint(tmp_path / "first.ckpt", 0, 1, 0.5)
    other = write_checkpoint(tmp_path / "other.ckpt", 1, 2, 0.4, **hparams)
    with pytest.raises(CheckpointMismatchError) as raised:
        average_checkpoints([first, other], tmp_path / "averaged.ckpt")
    assert f"cannot average {other} with {first}: {shown}" in str(raised.value)
    assert not (tmp_path / "averaged.ckpt").exists()


def test_best_k_by_the_monitored_score_and_last_n_by_step(tmp_path):
    for seed, (step, wer) in enumerate([(10, 0.5), (20, 0.3), (30, 0.4), (40, 0.6)]):
        write_checkpoint(tmp_path / f"step{step}-wer{wer}.ckpt", seed, step, wer)
    write_checkpoint(tmp_path / "last.ckpt", 3, 40, 0.1)  # a stale score: never ranked
    averaged = average_checkpoints([tmp_path / "step10-wer0.5.ckpt"], tmp_path / "avg.ckpt")

    found = find_checkpoints([tmp_path])
    assert averaged.output not in found and len(found) == 5
    infos = [read_info(path) for path in found]
    best = select_best(infos, 2)
    assert [(i.step, i.score, i.monitor, i.mode) for i in best] == [
        (20, 0.3, "val/wer", "min"), (30, 0.4, "val/wer", "min"),
    ]  # fmt: skip
    assert [i.step for i in select_best(infos, 10)] == [10, 20, 30, 40]
    assert [i.step for i in select_last(infos, 2)] == [30, 40]  # step 40 once
    with pytest.raises(ConfigError, match="--best must be >= 1"):
        select_best(infos, 0)
    unscored = [read_info(write_checkpoint(tmp_path / "x.ckpt", 0, 5, None))]
    with pytest.raises(ConfigError, match="records a monitored score"):
        select_best(unscored, 1)
    with pytest.raises(ConfigError, match="neither a checkpoint nor a folder"):
        find_checkpoints([tmp_path / "missing"])
