"""``sagemaker_entry/train.py`` as a two-instance SageMaker job, both "hosts" on this machine.

Each host is the entry run with its own /opt/ml-like folder and ``SM_CURRENT_HOST``; it starts
itself under ``torchrun`` (one CPU process per host: ``SM_NUM_GPUS=0``), ranked by its place in
``SM_HOSTS``. ``algo-1`` does not resolve here: ``ASR_LIGHTNING_HOST_ADDRESSES`` maps both names to
127.0.0.1 and ``SM_MASTER_PORT`` picks a free port. The job must see every training utterance
exactly once per epoch across the hosts and end with the weights of the same ``fit`` run as two
processes of one machine.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from asr_lightning.sagemaker import contract as sm
from tests.conftest import REPO_ROOT
from tests.sagemaker.an4_channels import TINY_CONFIG, make_an4_channels
from tests.training_support import (
    assert_once_per_epoch,
    assert_same_weights,
    batch_ids,
    checkpoint_weights,
    distributed_env,
    free_port,
    hf_weights,
    manifest_ids,
    read_records,
    recorder_callback,
    run_together,
)

ENTRY = REPO_ROOT / "sagemaker_entry" / "train.py"
HOSTS = ("algo-1", "algo-2")
EPOCHS = 2
#: 24 utterances (21 long enough) in batches of up to 4 within each duration bucket
HYPERPARAMETERS = {"batch_size": 4, "max_epochs": EPOCHS, "learning_rate": 0.002}


def _config(root: Path) -> Path:
    """The tiny AN4 model's config, recording the trained batches into ``root/records``."""
    config = copy.deepcopy(TINY_CONFIG)
    config["trainer"]["callbacks"] = [recorder_callback(root / "records")]
    # no LayerDrop (Parakeet's default is 0.1): plain DDP refuses it
    config["model"]["config_overrides"]["layerdrop"] = 0.0
    root.mkdir(parents=True, exist_ok=True)
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _host_env(opt_ml: Path, channels: dict[str, Path], config: Path) -> dict[str, str]:
    """The SageMaker environment of a host whose /opt/ml is ``opt_ml``."""
    (opt_ml / "output" / "data").mkdir(parents=True)
    return {
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
        "SM_CHANNEL_TRAIN": str(channels["train"]),
        "SM_CHANNEL_EVAL": str(channels["eval"]),
        "SM_NUM_GPUS": "0",
        "SM_HPS": json.dumps({**HYPERPARAMETERS, "config": str(config)}),
        "ASR_LIGHTNING_CHECKPOINT_DIR": str(opt_ml / "checkpoints"),
        "ASR_LIGHTNING_SKIP_ONNX": "1",
    }


@pytest.mark.slow
def test_two_hosts_see_every_item_once_and_train_like_one_host(
    shared_data: Path, tmp_path: Path
) -> None:
    channels = make_an4_channels(shared_data / "an4", tmp_path / "data")
    config, port = _config(tmp_path / "job"), free_port()
    hosts, output_dirs = [], []
    for host in HOSTS:
        env = {
            **_host_env(tmp_path / host / "opt" / "ml", channels, config),
            "SM_HOSTS": json.dumps(HOSTS),
            "SM_CURRENT_HOST": host,
            "SM_MASTER_PORT": str(port),
            sm.HOST_ADDRESSES_ENV: json.dumps(dict.fromkeys(HOSTS, "127.0.0.1")),
        }
        hosts.append(([sys.executable, str(ENTRY)], distributed_env(**env)))
        output_dirs.append(Path(env["SM_OUTPUT_DATA_DIR"]))
    outputs = run_together(hosts, tmp_path / "logs", cwd=output_dirs)

    # the reference: the fit the entry runs on one host, given two processes there
    reference_ml = tmp_path / "reference" / "opt" / "ml"
    env = _host_env(reference_ml, channels, _config(tmp_path / "reference"))
    single = sm.contract_from_env(env, checkpoint_dir=env["ASR_LIGHTNING_CHECKPOINT_DIR"])
    assert single.world_size == 1
    two_processes = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    fit = [*sm.lightning_args(single, REPO_ROOT), *two_processes]
    reference = [str(Path(sys.executable).parent / "asr-lightning"), *fit]
    reference_output = Path(env["SM_OUTPUT_DATA_DIR"])
    run_together([(reference, distributed_env())], tmp_path / "logs_reference", reference_output)

    for rank, output in enumerate(outputs):
        launch = f"--node_rank={rank} --master_addr=127.0.0.1 --master_port={port}"
        assert launch in output, output[-3000:]
        assert "--trainer.devices 1 --trainer.num_nodes 2 --trainer.strategy ddp" in output
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output, output[-3000:]
    # the metric lines and the model dir come from global rank 0, on algo-1
    assert outputs[0].count("eval_wer=") == EPOCHS and "eval_wer=" not in outputs[1]
    model_dirs = {host: tmp_path / host / "opt" / "ml" / "model" for host in HOSTS}
    assert (model_dirs["algo-1"] / "code" / "requirements.txt").is_file()
    assert not (model_dirs["algo-2"] / "hf_model").exists()

    records = read_records(tmp_path / "job" / "records")
    items = assert_once_per_epoch(records, ranks=2, epochs=EPOCHS)
    kept = int(re.search(r"train/train: kept (\d+) of 24", outputs[0]).group(1))
    assert len(items) == kept and items <= set(manifest_ids(channels["train"] / "manifest.jsonl"))
    # global rank r of two hosts trains the batches of rank r of one host, in the same order
    assert batch_ids(records) == batch_ids(read_records(tmp_path / "reference" / "records"))
    per_rank = int(re.search(r"train: (\d+) batches/epoch/rank", outputs[0]).group(1))
    assert len(records[0]) == EPOCHS * per_rank
    assert any(lr > 0 for line in records[0] for lr in line["lr"])  # the weights did move

    checkpoints = tmp_path / "algo-1" / "opt" / "ml" / "checkpoints"
    assert_same_weights(
        checkpoint_weights(checkpoints / sm.LAST_CHECKPOINT),
        checkpoint_weights(reference_ml / "checkpoints" / sm.LAST_CHECKPOINT),
    )
    reference_hf = reference_ml / "model" / "hf_model"
    assert_same_weights(hf_weights(model_dirs["algo-1"] / "hf_model"), hf_weights(reference_hf))
