"""Multi-node DDP for real, on one machine: two torchrun "nodes" of one CPU process each.

Each node is its own ``torchrun --nnodes 2 --node-rank R`` running ``asr-lightning fit`` with
``trainer.num_nodes: 2`` over gloo, with the rendezvous on 127.0.0.1. The job must see every
training utterance exactly once per epoch across the nodes, and end with the weights of one
node running two processes (``trainer.devices: 2``) on the same config and seed: the layout of
the processes changes nothing but where they run.

Also here: what only goes wrong on several nodes or processes (a node reading checkpoints that
only global rank 0's disk has; LayerDrop under plain DDP).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from asr_lightning.training.callbacks import ONNXExport, SaveHFModel
from tests.training_support import (
    TINY_PARAKEET,
    assert_once_per_epoch,
    assert_same_weights,
    batch_ids,
    distributed_env,
    free_port,
    hf_weights,
    manifest_ids,
    read_records,
    recorder_callback,
    run_dirs,
    run_together,
    tiny_config,
)

EPOCHS = 2
#: trainer settings of both runs: two epochs of 3 batches per rank, a validation after each
TRAINER = {"accelerator": "cpu", "strategy": "ddp", "max_epochs": EPOCHS, "max_steps": -1}


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _config(directory: Path, **layout: int) -> Path:
    callbacks = [recorder_callback(directory / "records")]
    trainer = {**TRAINER, **layout, "callbacks": callbacks}
    return tiny_config(directory, train=24, evaluation=8, trainer=trainer)


@pytest.mark.slow
def test_two_torchrun_nodes_see_every_item_once_and_train_like_one_node(tmp_path: Path) -> None:
    two_nodes = _config(tmp_path / "nodes", num_nodes=2, devices=1)
    one_node = _config(tmp_path / "node", num_nodes=1, devices=2)
    port = free_port()
    nodes = [
        [
            _bin("torchrun"),
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(rank),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--no-python",
            _bin("asr-lightning"),
            "fit",
            "--config",
            str(two_nodes),
        ]
        for rank in (0, 1)
    ]
    outputs = run_together([(node, distributed_env()) for node in nodes], tmp_path / "logs")
    # the reference: one node, Lightning starts its second process itself
    reference = [_bin("asr-lightning"), "fit", "--config", str(one_node)]
    run_together([(reference, distributed_env())], tmp_path / "logs_reference")

    # each node ran one process of a world of two, with its own global rank
    for rank, output in enumerate(outputs):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output, output[-3000:]
    records = read_records(tmp_path / "nodes" / "records")
    items = assert_once_per_epoch(records, ranks=2, epochs=EPOCHS)
    reference_records = read_records(tmp_path / "node" / "records")
    assert assert_once_per_epoch(reference_records, ranks=2, epochs=EPOCHS) == items
    assert items == set(manifest_ids(tmp_path / "nodes" / "train.jsonl"))  # all 24 kept
    # global rank r of two nodes trains the batches of rank r of one node, in the same order
    assert batch_ids(records) == batch_ids(reference_records)
    assert len(records[0]) == EPOCHS * 3

    (nodes_run,) = run_dirs(tmp_path / "nodes")  # one log folder: only global rank 0 writes
    (node_run,) = run_dirs(tmp_path / "node")
    last = _load(nodes_run / "checkpoints" / "last.ckpt")
    reference_last = _load(node_run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == reference_last["global_step"] == EPOCHS * 3
    assert any(lr > 0 for line in records[0] for lr in line["lr"])  # the weights did move
    assert_same_weights(last["state_dict"], reference_last["state_dict"])
    assert_same_weights(hf_weights(nodes_run / "hf_model"), hf_weights(node_run / "hf_model"))


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.parametrize("callback", [SaveHFModel, ONNXExport])
def test_end_of_fit_exports_read_the_best_checkpoint_on_global_rank_zero_only(
    callback: type[SaveHFModel] | type[ONNXExport], tmp_path: Path
) -> None:
    # on another node than global rank 0 the best checkpoint's path is known, not its file
    best = tmp_path / "node0" / "checkpoints" / "step3-wer0.5000.ckpt"
    barriers: list[str] = []
    trainer = SimpleNamespace(
        interrupted=False,
        sanity_checking=False,
        is_global_zero=False,
        log_dir=str(tmp_path / "node1"),
        default_root_dir=str(tmp_path / "node1"),
        checkpoint_callback=SimpleNamespace(best_model_path=str(best)),
        strategy=SimpleNamespace(barrier=barriers.append),
    )
    module = SimpleNamespace()  # a rank that is not global zero touches no weights
    exporter = callback(dirpath=str(tmp_path / "out"), use_best=True)

    exporter.on_fit_end(trainer, module)  # type: ignore[arg-type]

    assert len(barriers) == 1  # it still meets global rank 0 at the end of its export
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_layerdrop_under_ddp_is_refused_before_it_hangs(tmp_path: Path) -> None:
    # LayerDrop (Parakeet's default is 0.1) skips layers at random, differently on each rank:
    # plain DDP then waits forever on gradients, or fails later with a traceback
    model = {"config_overrides": {**TINY_PARAKEET, "layerdrop": 0.5}}
    recorder = [recorder_callback(tmp_path / "records")]
    trainer = {**TRAINER, "devices": 2, "callbacks": recorder}
    config = tiny_config(tmp_path, model=model, trainer=trainer)
    command = [_bin("asr-lightning"), "fit", "--config", str(config)]

    with pytest.raises(AssertionError, match="exited 2") as failed:
        run_together([(command, distributed_env())], tmp_path / "logs")

    message = str(failed.value)
    assert "error: layerdrop=0.5 skips encoder layers" in message
    assert "--model.layerdrop 0.0" in message and "ddp_find_unused_parameters_true" in message
    assert not (tmp_path / "records").exists()  # refused before any batch
