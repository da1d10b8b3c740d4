"""The training CLI end to end: resuming a killed run, DDP on CPU, checkpoint selection."""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import lightning
import pytest
import torch

from asr_lightning.cli import main
from asr_lightning.errors import ConfigError
from asr_lightning.training.lightning_cli import best_checkpoint_of, newest_last_checkpoint
from tests.training_support import (
    REPO_ROOT,
    last_scalar,
    manifest_ids,
    read_records,
    run_and_kill,
    run_cli,
    run_dirs,
    tiny_config,
)

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
RECORDER = "tests.training_support.RecordBatches"
STALLER = "tests.training_support.StallAtStep"


def _recorded(directory: Path) -> list[str]:
    return [
        f"--trainer.callbacks+={RECORDER}",
        f"--trainer.callbacks.init_args.directory={directory}",
    ]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    steps, kill_after = 9, 4  # killed mid-epoch 0, ends mid-epoch 1 (6 batches per epoch)
    settings = {"trainer": {"max_steps": steps, "limit_val_batches": 0}}
    config = tiny_config(tmp_path / "killed", train=24, **settings)
    every = ["--checkpoint.every_n_train_steps", "2"]
    marker = tmp_path / "stalled"
    staller = [
        f"--trainer.callbacks+={STALLER}",
        f"--trainer.callbacks.init_args.step={kill_after}",
    ]
    run_and_kill(
        "fit", "--config", str(config), *every, *_recorded(tmp_path / "rec"), *staller,
        f"--trainer.callbacks.init_args.marker={marker}",
        marker=marker,
    )  # fmt: skip
    (killed_run,) = run_dirs(tmp_path / "killed")
    killed = _load(killed_run / "checkpoints" / "last.ckpt")
    assert killed["global_step"] == kill_after
    assert killed["ASRDataModule"]["train_sampler"]["batches_done"] == kill_after

    args = ["fit", "--config", str(config), *every, *_recorded(tmp_path / "rec")]
    assert main([*args, "--ckpt_path", "last"]) == 0
    reference_config = tiny_config(tmp_path / "reference", train=24, **settings)
    reference_args = ["fit", "--config", str(reference_config), *every]
    assert main([*reference_args, *_recorded(tmp_path / "ref")]) == 0

    # the resumed run went on in the killed run's folder, from its step
    assert run_dirs(tmp_path / "killed") == [killed_run]
    records, expected = read_records(tmp_path / "rec")[0], read_records(tmp_path / "ref")[0]
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    # the same batches at the same positions: every item once in the resumed epoch
    assert [(r["epoch"], r["batch_idx"], r["ids"]) for r in records] == [
        (r["epoch"], r["batch_idx"], r["ids"]) for r in expected
    ]
    epoch0 = [r for r in records if r["epoch"] == 0]
    assert [r["batch_idx"] for r in epoch0] == list(range(len(epoch0)))
    assert kill_after < len(epoch0) < steps
    seen = [uid for r in epoch0 for uid in r["ids"]]
    assert len(seen) == len(set(seen)) >= 23
    assert records[kill_after]["lr"] == pytest.approx(expected[kill_after]["lr"], rel=1e-6)
    # optimizer moments, scheduler and weights end exactly where the uninterrupted run ends
    (reference_run,) = run_dirs(tmp_path / "reference")
    final, reference = (
        _load(run / "checkpoints" / "last.ckpt") for run in (killed_run, reference_run)
    )
    assert final["global_step"] == reference["global_step"] == steps
    assert final["lr_schedulers"] == reference["lr_schedulers"]
    for name, weights in reference["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], weights, rtol=0, atol=1e-6)
    moments = [s["exp_avg_sq"] for s in final["optimizer_states"][0]["state"].values()]
    expected_moments = [s["exp_avg_sq"] for s in reference["optimizer_states"][0]["state"].values()]
    for moment, expected_moment in zip(moments, expected_moments, strict=True):
        torch.testing.assert_close(moment, expected_moment, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_sees_every_item_once_and_reduces_metrics(tmp_path):
    config = tiny_config(tmp_path, train=24, trainer={"max_epochs": 2, "max_steps": -1})
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]

    done = run_cli("fit", "--config", str(config), *ddp, *_recorded(tmp_path / "rec"))
    assert done.returncode == 0, done.stderr[-3000:]

    kept = int(re.search(r"train/train: kept (\d+) of 24", done.stderr).group(1))
    records = read_records(tmp_path / "rec")
    assert sorted(records) == [0, 1]
    assert len(records[0]) == len(records[1])  # equal batch counts: no rank waits on the other
    ids = set(manifest_ids(tmp_path / "train.jsonl"))
    for epoch in (0, 1):
        seen = Counter(
            uid
            for rank in records.values()
            for r in rank
            if r["epoch"] == epoch
            for uid in r["ids"]
        )
        assert max(seen.values()) == 1 and len(seen) == kept and set(seen) <= ids
    (fitted,) = run_dirs(tmp_path)
    last = fitted / "checkpoints" / "last.ckpt"

    # test on 2 ranks: one JSONL with every utterance once, and the single-process WER
    tested = run_cli("test", "--config", str(config), *ddp, "--ckpt_path", str(last))
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert main(["test", "--config", str(config), "--ckpt_path", str(last)]) == 0
    on_two, on_one = run_dirs(tmp_path)[1:]
    lines = {}
    for run_dir in (on_two, on_one):
        path = run_dir / "predictions" / "test_test.jsonl"
        lines[run_dir] = sorted(path.read_text(encoding="utf-8").splitlines())
    assert lines[on_two] == lines[on_one]
    assert len(lines[on_two]) == len(manifest_ids(tmp_path / "eval.jsonl"))
    assert last_scalar(on_two, "test/wer") == pytest.approx(last_scalar(on_one, "test/wer"))
    # the validation of the last epoch (same weights as last.ckpt) agrees too
    assert last_scalar(fitted, "val/wer") == pytest.approx(last_scalar(on_one, "test/wer"))


def test_newest_last_checkpoint_and_the_best_one_it_records(tmp_path):
    old, new = tmp_path / "version_0" / "checkpoints", tmp_path / "version_1" / "checkpoints"
    for folder in (old, new):
        folder.mkdir(parents=True)
    assert newest_last_checkpoint([old, new]) is None
    best = new / "step4-wer0.5000.ckpt"
    best.write_bytes(b"")
    torch.save(
        {"callbacks": {"ResumableCheckpoint{}": {"best_model_path": str(best)}}}, old / "last.ckpt"
    )
    torch.save({"callbacks": {"EarlyStopping{}": {"wait_count": 0}}}, new / "last-v1.ckpt")
    os.utime(old / "last.ckpt", (1, 1))  # older

    assert newest_last_checkpoint([old, new]) == new / "last-v1.ckpt"
    assert best_checkpoint_of(old / "last.ckpt") == best
    with pytest.raises(ConfigError, match="no best checkpoint"):
        best_checkpoint_of(new / "last-v1.ckpt")


def test_checkpoints_best_after_validations_and_last_every_n_steps_and_at_the_end(tmp_path):
    settings = {"max_steps": 5, "val_check_interval": 2, "limit_val_batches": 1}
    config = tiny_config(tmp_path, trainer=settings)

    assert main(["fit", "--config", str(config), "--checkpoint.every_n_train_steps", "3"]) == 0

    (run,) = run_dirs(tmp_path)
    names = {path.name.split("-")[0] for path in (run / "checkpoints").iterdir()}
    assert names == {"step2", "step4", "last.ckpt"}  # no best checkpoint from step 3's save
    assert _load(run / "checkpoints" / "last.ckpt")["global_step"] == 5


def _common_voice_folder(folder: Path, counts: dict[str, int]) -> Path:
    """A Common Voice release layout (clips/ + <split>.tsv) over quickstart utterances, with
    Common Voice's mixed case and punctuation."""
    import json

    from tests.training_support import QUICKSTART

    (folder / "clips").mkdir(parents=True)
    rows = [
        json.loads(line)
        for line in (QUICKSTART / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    first = 0
    for split, count in counts.items():
        lines = ["client_id\tpath\tsentence"]
        for n, row in enumerate(rows[first : first + count]):
            clip = folder / "clips" / Path(row["audio_filepath"]).name
            clip.symlink_to(QUICKSTART / row["audio_filepath"])
            sentence = row["text"].capitalize() + ("." if n % 2 else "!")
            lines.append(f"speaker{n % 3}\t{clip.name}\t{sentence}")
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        first += count
    return folder


@pytest.mark.slow
def test_the_xlsr_recipe_fine_tunes_a_tokenizer_less_checkpoint(tmp_path, monkeypatch):
    """configs/xlsr_cv.yaml as it is, on a Common Voice folder and a tiny XLS-R-like encoder
    (layer-norm feature encoder, no tokenizer, no CTC head), for two optimizer steps on CPU."""
    import json

    import yaml

    from tests.model import tiny

    encoder = tmp_path / "xls-r-tiny"
    tiny.save_encoder_folder("wav2vec2", encoder, feat_extract_norm="layer")
    cv = _common_voice_folder(tmp_path / "cv", {"train": 16, "dev": 4, "test": 4})
    config = yaml.safe_load((REPO_ROOT / "configs" / "xlsr_cv.yaml").read_text())
    config["trainer"] |= {
        "accelerator": "cpu", "precision": "32-true", "max_steps": 2, "val_check_interval": 2,
        "enable_progress_bar": False, "default_root_dir": str(tmp_path / "runs"),
    }  # fmt: skip
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    config["model"]["model_name_or_path"] = str(encoder)
    for split in ("train", "validation", "test"):
        config["data"][split]["path"] = str(cv)
    config["data"] |= {"batch_size": 4, "num_workers": 0, "duration_cache": None}
    path = tmp_path / "xlsr.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr("sys.argv", ["asr-lightning", "fit", "--config", str(path)])

    assert main() == 0

    (run,) = (tmp_path / "runs" / "xls-r-300m-tr").glob("version_*")
    vocab = json.loads((run / "hf_model" / "vocab.json").read_text(encoding="utf-8"))
    letters = {token for token in vocab if len(token) == 1 and token.isalpha()}
    assert letters and all(letter.islower() for letter in letters)  # text_case: lower
    assert not {".", "!"} & set(vocab)  # punctuation dropped
    saved = json.loads((run / "hf_model" / "config.json").read_text(encoding="utf-8"))
    assert saved["vocab_size"] == len(vocab) and saved["mask_time_prob"] == 0.05
    assert (saved["hidden_dropout"], saved["layerdrop"]) == (0.0, 0.0)


class MaskProbe(lightning.Callback):
    """Appends ``{"stage", "masked_frames"}`` per batch to ``<directory>/masks.jsonl``: how many
    valid frames of the batch the model receives are wholly the SpecAugment fill value."""

    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / "masks.jsonl"

    def _record(self, stage: str, batch: dict) -> None:
        from asr_lightning.data.spec_augment import FILL_VALUE

        valid = batch["attention_mask"].bool()  # (B, T)
        filled = (batch["input_features"] == FILL_VALUE).all(dim=2)  # (B, T)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            out.write(json.dumps({"stage": stage, "masked_frames": int((filled & valid).sum())}))
            out.write("\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._record("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._record("val", batch)


def test_fit_a_parakeet_with_spec_augment_masks_training_batches_only(tmp_path):
    import yaml

    probe = tmp_path / "probe"
    config = tiny_config(
        tmp_path,
        train=16,
        evaluation=4,
        trainer={
            "max_steps": 4, "val_check_interval": 2,
            "callbacks": [{"class_path": f"{__name__}.MaskProbe",
                           "init_args": {"directory": str(probe)}}],
        },
        data={"spec_augment": {"num_time_masks": 4, "time_width": 20}},
    )  # fmt: skip

    assert main(["fit", "--config", str(config)]) == 0

    lines = [json.loads(line) for line in (probe / "masks.jsonl").read_text().splitlines()]
    train = [line["masked_frames"] for line in lines if line["stage"] == "train"]
    val = [line["masked_frames"] for line in lines if line["stage"] == "val"]
    assert len(train) == 4 and all(count > 0 for count in train)
    assert val and all(count == 0 for count in val)
    (run,) = run_dirs(tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["spec_augment"]
    assert saved == {
        "num_freq_masks": 2, "freq_width": 27, "num_time_masks": 4, "time_width": 20,
        "probability": 1.0,
    }  # fmt: skip
    assert isinstance(saved["time_width"], int)  # frames, not a fraction
    assert math.isfinite(last_scalar(run, "train/loss"))
