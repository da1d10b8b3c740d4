"""Transfer: does fine-tuning a pretrained encoder beat training from scratch at the same budget?

    python benchmarks/finetune.py                          # pretrain on AN4, then FSDD runs
    python benchmarks/finetune.py --encoder runs/an4/version_0/hf_model --epochs 2 6
    python benchmarks/finetune.py --encoder runs/finetune/pretrain_an4/version_0/hf_model \
        --train-fraction 0.1 --epochs 4 16

Steps, each through the ``asr-lightning`` command:

1. **Pretrain** an encoder on AN4 with ``configs/an4.yaml`` (Parakeet CTC from scratch, dev
   speakers held out) for ``--pretrain-epochs``; or take ``--encoder``, an ``hf_model`` folder.
2. **Strip it** to what a pretrained checkpoint such as ``facebook/wav2vec2-base`` ships: its
   config, its encoder weights without the CTC head, its feature extractor; no tokenizer.
3. **Fine-tune** it on the Free Spoken Digit Dataset (isolated digits at 8 kHz, resampled to
   16 kHz): ``fit`` builds the vocabulary from FSDD's transcripts and a new CTC head, with
   ``freeze_feature_encoder`` (for Parakeet, its subsampling convolutions).
4. **From scratch**, the same architecture, data, batching and epochs, at its own learning
   rate (that of ``configs/an4.yaml``).
5. **Score** both on FSDD test with the checkpoint that is best on a held-out dev set (takes
   5-9 of the training takes), never on test.

Every budget in ``--epochs`` runs both systems; ``--train-fraction`` keeps a share of the FSDD
training utterances (a low-resource condition). The table gives test WER/CER, wall time of
``fit`` and optimizer steps.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from an4_quality import best_checkpoint, newest_version, run, scalars, test  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AN4_CONFIG = Path("configs/an4.yaml")
FSDD = Path("manifests/fsdd")
#: FSDD training takes held out for model choice (takes 0-4 are the test split).
DEV_TAKES = range(5, 10)
SPLIT_SEED = 0
#: The learning rate of configs/an4.yaml: the two systems differ by their initial weights only
#: (on the dev set, 1e-3 fine-tuned worse at 10% of FSDD: 38% WER against 30%).
FINE_TUNE_LR = 3e-3
#: Files a tokenizer leaves in a model folder.
TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.json", "added_tokens.json")  # fmt: skip


def prepare_fsdd(src: Path, fraction: float) -> dict[str, Path]:
    """FSDD manifests: ``train`` (minus dev, optionally a share of it), ``dev`` and ``test``."""
    run(["asr-lightning", "data", "prepare", "fsdd", str(src), str(FSDD)], Path("/dev/null"))
    rows = [json.loads(line) for line in (REPO / FSDD / "train.jsonl").open(encoding="utf-8")]
    dev = [row for row in rows if int(row["id"].rsplit("_", 1)[1]) in DEV_TAKES]
    train = [row for row in rows if row not in dev]
    if fraction < 1.0:
        train = random.Random(SPLIT_SEED).sample(train, round(fraction * len(train)))
    paths = {"train": REPO / FSDD / f"train_{fraction:g}.jsonl", "dev": REPO / FSDD / "dev.jsonl"}
    for name, part in (("train", train), ("dev", dev)):
        with paths[name].open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in part)
    paths["test"] = REPO / FSDD / "test.jsonl"
    print(f"FSDD: train {len(train)} / dev {len(dev)} / test 300 utterances")
    return paths


def strip_to_encoder(hf_model: Path, out: Path) -> Path:
    """A copy of an ``hf_model`` folder without its tokenizer and its CTC head's weights."""
    from safetensors.torch import load_file, save_file

    from asr_lightning.model.families import HEAD_NAMES

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(hf_model, out)
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    kept = {k: v for k, v in tensors.items() if k.split(".")[0] not in HEAD_NAMES}
    save_file(kept, weights, metadata={"format": "pt"})
    print(f"encoder checkpoint {out}: {len(kept)} of {len(tensors)} tensors (head removed)")
    return out


def fit_and_test(name: str, fit_args: list[str], work: Path, log: Path) -> dict:
    out = work / name
    cmd = ["asr-lightning", "fit", "--config", str(AN4_CONFIG), *fit_args]
    cmd += ["--trainer.enable_progress_bar", "false", "--trainer.max_time", "null"]
    cmd += ["--trainer.default_root_dir", str(out)]
    cmd += ["--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", ""]
    seconds = run(cmd, log)
    fit_dir = newest_version(out)
    steps = max(step for step, _, _ in scalars(fit_dir, ("val/wer",))["val/wer"])
    best = best_checkpoint(fit_dir / "checkpoints")
    wer, cer = test(fit_dir / "config.yaml", best, out / "test", log)
    curve = [round(value, 4) for _, _, value in scalars(fit_dir, ("val/wer",))["val/wer"]]
    return {"system": name, "wer": wer, "cer": cer, "fit_s": seconds, "steps": steps,
            "dev_wer_by_epoch": curve}  # fmt: skip


def data_args(paths: dict[str, Path]) -> list[str]:
    return [
        "--data.train", str(paths["train"]), "--data.validation", str(paths["dev"]),
        "--data.test", str(paths["test"]), "--data.augment", "null",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--an4", type=Path, default=REPO.parent / "shared/data/an4")
    parser.add_argument("--fsdd", type=Path, default=REPO.parent / "shared/data/fsdd")
    parser.add_argument("--encoder", type=Path, default=None, help="a pretrained hf_model")
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--train-fraction", type=float, default=1.0)
    parser.add_argument("--fine-tune-lr", type=float, default=FINE_TUNE_LR)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/finetune"))
    args = parser.parse_args(argv)
    work = REPO / args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"

    hf_model = args.encoder
    if hf_model is None:
        run([sys.executable, "benchmarks/an4_quality.py", "--prepare-only"], log)
        started = time.monotonic()
        pretrain = ["--trainer.max_epochs", str(args.pretrain_epochs)]
        result = fit_and_test("pretrain_an4", pretrain, work, log)
        print(f"pretrained on AN4 in {(time.monotonic() - started) / 60:.1f} min: AN4 test "
              f"WER {100 * result['wer']:.1f}%")  # fmt: skip
        hf_model = newest_version(work / "pretrain_an4") / "hf_model"
    encoder = strip_to_encoder(hf_model, work / "encoder")
    paths = prepare_fsdd(args.fsdd, args.train_fraction)

    rows = []
    for epochs in args.epochs:
        budget = [*data_args(paths), "--trainer.max_epochs", str(epochs)]
        tuned = [
            "--model.model_name_or_path", str(encoder), "--model.model_type", "null",
            "--model.config_overrides", "null", "--model.freeze_feature_encoder", "true",
            "--model.learning_rate", str(args.fine_tune_lr),
        ]  # fmt: skip
        for name, extra in ((f"fine-tuned_{epochs}ep", tuned), (f"scratch_{epochs}ep", [])):
            row = fit_and_test(name, [*budget, *extra], work, log)
            rows.append({**row, "epochs": epochs})
            print(json.dumps(row), flush=True)

    print(f"\nFSDD test (train fraction {args.train_fraction:g}), checkpoints chosen on dev\n")
    print("| system | epochs | optimizer steps | fit wall min | test WER | test CER |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['system'].split('_')[0]} | {row['epochs']} | {row['steps']} | "
            f"{row['fit_s'] / 60:.1f} | {100 * row['wer']:.1f}% | {100 * row['cer']:.1f}% |"
        )
    print("\ndev WER after each epoch (%):")
    for row in rows:
        curve = " ".join(f"{100 * wer:.0f}" for wer in row["dev_wer_by_epoch"])
        print(f"  {row['system']}: {curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
