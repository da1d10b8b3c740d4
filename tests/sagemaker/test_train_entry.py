"""``sagemaker_entry/train.py`` run for real under the training contract on a tiny AN4 subset.

The test plays the SageMaker container: an /opt/ml-like folder, the ``SM_*`` environment and
the hyperparameters as ``--key value`` arguments. The job trains, prints ``eval_wer=`` lines,
leaves a deployable model dir, and a second run of the same job resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCTC

from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.decoding.package import load_decoding
from tests.conftest import REPO_ROOT
from tests.sagemaker.an4_channels import make_an4_channels, write_tiny_config

ENTRY = REPO_ROOT / "sagemaker_entry" / "train.py"
EVAL_WER = re.compile(r"step=(\d+) .*eval_wer=([0-9.]+)")


def _run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ENTRY), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=env["SM_OUTPUT_DATA_DIR"],
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.mark.slow
def test_entry_trains_resumes_and_leaves_a_deployable_model_dir(
    shared_data: Path, tmp_path: Path
) -> None:
    channels = make_an4_channels(shared_data / "an4", tmp_path / "data")
    opt_ml = tmp_path / "opt" / "ml"
    model_dir, output_dir = opt_ml / "model", opt_ml / "output" / "data"
    checkpoints = opt_ml / "checkpoints"
    output_dir.mkdir(parents=True)
    config = write_tiny_config(tmp_path / "tiny.yaml")
    lm_channel = tmp_path / "data" / "channels" / "lm"  # the seed's lm_path, as a channel
    lm_channel.mkdir()
    texts = [
        json.loads(line)["text"]
        for line in (channels["train"] / "manifest.jsonl").read_text().splitlines()
    ]
    write_arpa(lm_channel / "an4_2gram.arpa", *kneser_ney(texts, order=2))
    env = {
        **os.environ,
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output_dir),
        "SM_CHANNEL_TRAIN": str(channels["train"]),
        "SM_CHANNEL_EVAL": str(channels["eval"]),
        "SM_CHANNEL_LM": str(lm_channel),
        "SM_HOSTS": '["algo-1"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_NUM_GPUS": "0",
        "SM_HPS": json.dumps({"learning_rate": 0.002, "batch_size": 8, "beam_width": 8}),
        "ASR_LIGHTNING_CHECKPOINT_DIR": str(checkpoints),
        "CUDA_VISIBLE_DEVICES": "",
    }
    first = _run(env, "--config", str(config), "--batch_size", "8", "--max_epochs", "1")
    steps = [int(step) for step, _ in EVAL_WER.findall(first)]
    assert steps, first[-3000:]
    assert (checkpoints / "last.ckpt").is_file()
    # TensorBoard logs land in SM_OUTPUT_DATA_DIR, which SageMaker uploads as output.tar.gz
    assert list((output_dir / "logs").rglob("events.out.tfevents.*"))

    hf_model = model_dir / "hf_model"
    model = AutoModelForCTC.from_pretrained(hf_model)
    assert model.config.model_type == "parakeet_ctc"
    assert (model_dir / "onnx" / "model.onnx").is_file()
    requirements = (model_dir / "code" / "requirements.txt").read_text().split()
    assert any(r.startswith("transformers") for r in requirements)
    assert not any(re.match(r"torch[<>=!~ ]", r) for r in requirements)
    assert (model_dir / "code" / "asr_lightning" / "__init__.py").is_file()
    handler = REPO_ROOT / "sagemaker_entry" / "inference.py"
    assert (model_dir / "code" / "inference.py").is_file() == handler.is_file()
    for folder in (hf_model, model_dir / "onnx"):  # the LM travels in both model folders
        decoding = load_decoding(folder)
        assert decoding is not None and decoding.beam and decoding.beam_width == 8
        lm = Path(decoding.lm)
        assert lm.parent == folder / "language_model"
        assert lm.read_bytes() == (lm_channel / "an4_2gram.arpa").read_bytes()

    # a restarted (spot-interrupted) job finds last.ckpt and goes on from its step
    env["ASR_LIGHTNING_SKIP_ONNX"] = "1"
    second = _run(env, "--config", str(config), "--batch_size", "8", "--max_epochs", "2")
    assert f"--ckpt_path {checkpoints / 'last.ckpt'}" in second
    assert "Restored all states from the checkpoint" in second
    resumed = [int(step) for step, _ in EVAL_WER.findall(second)]
    assert resumed and min(resumed) > max(steps)
