"""The SageMaker training contract -> LightningCLI arguments and the torchrun command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asr_lightning.errors import ConfigError
from asr_lightning.sagemaker import contract as sm


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    (train / "data.jsonl").write_text("")
    return {
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp_path / "output"),
        "SM_CHANNEL_TRAIN": str(train),
        "SM_HOSTS": '["algo-1", "algo-2"]',
        "SM_CURRENT_HOST": "algo-2",
        "SM_NUM_GPUS": "4",
        "SM_HPS": json.dumps({"learning_rate": 0.01, "batch_size": 16}),
        **extra,
    }


def test_contract_reads_env_and_cli_hyperparameters(tmp_path: Path) -> None:
    contract = sm.contract_from_env(_env(tmp_path), ["--batch_size", "32", "--config", "c.yaml"])
    assert contract.channels == {"train": str(tmp_path / "train")}
    assert contract.hosts == ("algo-1", "algo-2") and contract.node_rank == 1
    assert contract.world_size == 8 and contract.processes_per_node == 4
    # the arguments win over SM_HPS; JSON values are decoded
    assert contract.hyperparameters == {"learning_rate": 0.01, "batch_size": 32, "config": "c.yaml"}
    assert contract.checkpoint_dir == sm.DEFAULT_CHECKPOINT_DIR


def test_missing_model_dir_says_where_it_runs(tmp_path: Path) -> None:
    env = _env(tmp_path)
    del env["SM_MODEL_DIR"]
    with pytest.raises(ConfigError, match="SM_MODEL_DIR"):
        sm.contract_from_env(env)


def test_lightning_args_map_channels_hyperparameters_and_resume(tmp_path: Path) -> None:
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    env = _env(tmp_path, SM_HPS=json.dumps({"config": "configs/x.yaml", "trainer.max_epochs": 3}))
    contract = sm.contract_from_env(
        env, ["--learning_rate", "0.001", "--sagemaker_program", "t.py"], str(checkpoints)
    )
    args = sm.lightning_args(contract, "/src")
    assert args[:3] == ["fit", "--config", "/src/configs/x.yaml"]
    pairs = {key: value for key, value in zip(args, args[1:], strict=False) if key.startswith("--")}
    assert pairs["--data.train"] == str(tmp_path / "train" / "data.jsonl")
    assert pairs["--checkpoint.dirpath"] == str(checkpoints)
    assert pairs["--hf_export.dirpath"] == str(tmp_path / "model" / "hf_model")
    assert pairs["--model.learning_rate"] == "0.001"
    assert pairs["--trainer.max_epochs"] == "3"
    assert pairs["--trainer.num_nodes"] == "2" and pairs["--trainer.devices"] == "4"
    assert "--trainer.callbacks+=asr_lightning.training.callbacks.MetricLines" in args
    assert "--ckpt_path" not in args and "t.py" not in args
    (checkpoints / "last.ckpt").write_bytes(b"")
    assert sm.lightning_args(contract, "/src")[-2:] == [
        "--ckpt_path",
        str(checkpoints / "last.ckpt"),
    ]


def test_batch_size_replaces_the_seconds_cap() -> None:
    assert sm.hyperparameter_args({"batch_size": 8}) == [
        "--data.batch_size",
        "8",
        "--data.max_batch_seconds",
        "null",
    ]


def test_unknown_short_hyperparameter_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown hyperparameter 'lr'"):
        sm.hyperparameter_args({"lr": 0.1})


def test_channel_kinds(tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    (cv / "clips").mkdir(parents=True)
    for split in ("train", "dev"):
        (cv / f"{split}.tsv").write_text("client_id\tpath\tsentence\n")
    assert sm.resolve_channel(cv, "eval") == f"{cv}#dev"
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dataset_dict.json").write_text("{}")
    assert sm.resolve_channel(saved, "train") == str(saved)
    several = tmp_path / "several"
    several.mkdir()
    for name in ("train.jsonl", "dev.jsonl"):
        (several / name).write_text("")
    assert sm.resolve_channel(several, "eval") == str(several / "dev.jsonl")
    assert sm.resolve_channel(several, "train", "#x") == f"{several}#x"
    (several / "train.jsonl").unlink()
    (several / "other.csv").write_text("")
    with pytest.raises(ConfigError, match="train_source"):
        sm.resolve_channel(several, "train")


def test_torchrun_only_when_several_processes_and_not_yet_launched(tmp_path: Path) -> None:
    contract = sm.contract_from_env(_env(tmp_path))
    assert sm.needs_launcher(contract, {})
    assert not sm.needs_launcher(contract, {"LOCAL_RANK": "0"})
    command = sm.torchrun_command(contract, "train.py", ["--a", "1"])
    assert command == [
        "torchrun",
        "--nnodes=2",
        "--nproc_per_node=4",
        "--node_rank=1",
        "--master_addr=algo-1",
        "--master_port=29500",
        "train.py",
        "--a",
        "1",
    ]
    single = sm.contract_from_env(
        _env(tmp_path, SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1", SM_NUM_GPUS="0")
    )
    assert not sm.needs_launcher(single, {})
    assert "--trainer.strategy" not in sm.lightning_args(single, "/src")


def test_host_addresses_and_port_override_the_rendezvous(tmp_path: Path) -> None:
    addresses = json.dumps({"algo-1": "127.0.0.1", "algo-2": "127.0.0.2"})
    env = _env(tmp_path, ASR_LIGHTNING_HOST_ADDRESSES=addresses, SM_MASTER_PORT="41234")
    contract = sm.contract_from_env(env)
    assert contract.master_addr == "127.0.0.1" and contract.master_port == 41234
    command = sm.torchrun_command(contract, "train.py", [])
    assert "--master_addr=127.0.0.1" in command and "--master_port=41234" in command
    assert "--node_rank=1" in command  # ranks still come from the host names
    assert sm.contract_from_env(_env(tmp_path)).master_addr == "algo-1"  # unset: the name

    for bad in ('["127.0.0.1"]', '{"algo-1": 1}', '{"algo-1": ""}', "{not json"):
        with pytest.raises(ConfigError, match="ASR_LIGHTNING_HOST_ADDRESSES"):
            sm.contract_from_env(_env(tmp_path, ASR_LIGHTNING_HOST_ADDRESSES=bad))
    with pytest.raises(ConfigError, match="no address for 'algo-1'"):
        sm.contract_from_env(_env(tmp_path, ASR_LIGHTNING_HOST_ADDRESSES='{"algo-2": "x"}'))
    for bad in ("0", "65536", "port"):
        with pytest.raises(ConfigError, match="SM_MASTER_PORT must be a TCP port"):
            sm.contract_from_env(_env(tmp_path, SM_MASTER_PORT=bad))


def test_the_seeds_lm_path_and_beam_width_set_the_decoding(tmp_path: Path) -> None:
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "an4.arpa").write_text("")
    env = _env(tmp_path, SM_CHANNEL_LM=str(lm), SM_HPS=json.dumps({"beam_width": 16}))
    args = sm.lightning_args(sm.contract_from_env(env, [], str(tmp_path / "ckpt")), "/src")
    pairs = {key: value for key, value in zip(args, args[1:], strict=False) if key.startswith("--")}
    assert pairs["--decoding.lm"] == str(lm / "an4.arpa")  # the channel's one LM file
    assert pairs["--decoding.beam_width"] == "16"

    (lm / "other.arpa").write_text("")
    contract = sm.contract_from_env(env, ["--lm_path", "other.arpa"], str(tmp_path / "ckpt"))
    args = sm.lightning_args(contract, "/src")
    assert args[args.index("--decoding.lm") + 1] == str(lm / "other.arpa")
    with pytest.raises(ConfigError, match="holds 2 LM files.*lm_path"):
        sm.lightning_args(sm.contract_from_env(env, [], str(tmp_path / "ckpt")), "/src")
    contract = sm.contract_from_env(env, ["--lm_path", "gone.arpa"], str(tmp_path / "ckpt"))
    with pytest.raises(ConfigError, match="'gone.arpa' is not in the lm channel"):
        sm.lightning_args(contract, "/src")

    (tmp_path / "b").mkdir()
    without_channel = sm.contract_from_env(
        _env(tmp_path / "b"), ["--lm_path", "lms/an4.arpa"], str(tmp_path / "ckpt")
    )
    assert "/src/lms/an4.arpa" in sm.lightning_args(without_channel, "/src")


def test_logs_go_into_the_jobs_output_data(tmp_path: Path) -> None:
    tensorboard = tmp_path / "tb.yaml"
    tensorboard.write_text(
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
        "    init_args: {save_dir: runs, name: asr}\n"
    )
    silent = tmp_path / "silent.yaml"
    silent.write_text("trainer:\n  logger: false\n")
    for config, logs_moved in ((tensorboard, True), (None, True), (silent, False)):
        hps = json.dumps({"config": str(config)} if config else {})
        contract = sm.contract_from_env(_env(tmp_path, SM_HPS=hps), [], str(tmp_path / "ckpt"))
        args = sm.lightning_args(contract, "/src")
        pairs = dict(zip(args, args[1:], strict=False))
        moved = pairs.get("--trainer.logger.init_args.save_dir")
        assert moved == (str(tmp_path / "output" / "logs") if logs_moved else None), config
