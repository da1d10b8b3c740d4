"""A tiny AN4 job for the SageMaker entry tests: channel folders and a from-scratch config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from asr_lightning.data.prepare import prepare_an4

TRAIN_UTTERANCES = 24
EVAL_UTTERANCES = 6
#: A tiny Parakeet CTC model trained from scratch on CPU, quietly.
TINY_CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "log_every_n_steps": 1,
    },
    "model": {
        "model_name_or_path": None,
        "model_type": "parakeet_ctc",
        "config_overrides": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "subsampling_conv_channels": 8,
            "num_mel_bins": 16,
        },
    },
    "data": {"num_workers": 0, "level": "rms", "duration_cache": None},
}


def _copy_channel(manifest: Path, count: int, channel: Path) -> None:
    """The first ``count`` utterances, audio copied under the channel with relative paths."""
    channel.mkdir(parents=True)
    lines = manifest.read_text(encoding="utf-8").splitlines()[:count]
    with (channel / "manifest.jsonl").open("w", encoding="utf-8") as out:
        for line in lines:
            row = json.loads(line)
            audio = Path(row["audio_filepath"])
            target = channel / "audio" / audio.name
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(audio, target)
            row["audio_filepath"] = f"audio/{audio.name}"
            out.write(json.dumps(row) + "\n")


def make_an4_channels(an4: Path, root: Path) -> dict[str, Path]:
    """``train`` and ``eval`` channel folders (manifest + audio) of a few AN4 utterances."""
    manifests = prepare_an4(an4, root / "prepared")
    channels = {"train": root / "channels" / "train", "eval": root / "channels" / "eval"}
    _copy_channel(manifests["train"], TRAIN_UTTERANCES, channels["train"])
    _copy_channel(manifests["test"], EVAL_UTTERANCES, channels["eval"])
    return channels


def write_tiny_config(path: Path) -> Path:
    path.write_text(yaml.safe_dump(TINY_CONFIG), encoding="utf-8")
    return path
