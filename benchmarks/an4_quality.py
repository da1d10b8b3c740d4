"""AN4 quality bar: a CTC model trained from scratch on CPU in <= 30 minutes, scored on AN4 test.

Steps, each through the ``asr-lightning`` command:

1. ``asr-lightning data prepare an4 SRC manifests/an4`` (948 train / 130 test utterances);
2. hold out a few training speakers as a development set (``manifests/an4/dev.jsonl``, the rest
   in ``manifests/an4/train_minus_dev.jsonl``): checkpoints are chosen on speakers the model
   never trained on, and the test set is only read once, at the end;
3. write synthetic coloured noise for the noise augmentation (``manifests/an4/noise/``);
4. ``asr-lightning fit --config configs/an4.yaml`` under a wall-clock limit;
5. ``asr-lightning test`` with the best checkpoint (lowest development WER) and the last one;
   with ``--average K`` also with the average of the K best (``asr-lightning average --best K``,
   the fit keeping K checkpoints);
6. with ``--lm``: the model with the lower development WER of the best checkpoint and the
   average is chosen, a word 3-gram is built from the training transcripts
   (``scripts/build_ngram.py``), its weight and word bonus are chosen on the development set
   from a grid (``--lm-alphas``, ``--lm-betas``), and the test set is decoded once with them.

It prints the training minutes, the test WER/CER and the development WER/CER curve over time
(read from the TensorBoard event files) and exits with 1 when the greedy test WER of the model
dev chose (with ``--lm``: the best checkpoint or the average; otherwise the best) misses the
target.

    python benchmarks/an4_quality.py                     # the full 30-minute run
    python benchmarks/an4_quality.py --prepare-only      # steps 1-3, then use the config alone
    python benchmarks/an4_quality.py --average 5         # also test the average of the 5 best
    python benchmarks/an4_quality.py --average 5 --lm    # and the dev-chosen model with an LM
    python benchmarks/an4_quality.py --work-dir W --reuse-fit --average 5 --lm  # W's fit again
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = Path("manifests/an4")
CONFIG = Path("configs/an4.yaml")
#: Held-out speakers per gender (AN4 speaker ids start with f or m).
DEV_SPEAKERS_PER_GENDER = 3
SPLIT_SEED = 0
#: Synthetic noise: one file per colour, this long, at 16 kHz.
NOISE_SECONDS = 60
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
SAMPLE_RATE = 16_000
TARGET_WER = 0.12
# The LM weight and word bonus chosen on dev for step 6 (--lm-alphas, --lm-betas): wider than
# inference_speed.py's 4 x 4 grid, whose largest weight (1.2) won on AN4's dev speakers.
LM_ALPHAS = (0.3, 0.5, 0.8, 1.2, 1.6, 2.0, 2.5)
LM_BETAS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


def run(cmd: list[str], log_path: Path) -> float:
    """Runs ``cmd`` in the repository with its output appended to ``log_path``; wall seconds."""
    print("$", " ".join(cmd), flush=True)
    if cmd[0] == "asr-lightning" and shutil.which("asr-lightning") is None:  # venv not active
        cmd = [sys.executable, "-m", "asr_lightning.cli", *cmd[1:]]
    start = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        result = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}) after {seconds:.0f} s, see {log_path}")
    return seconds


def split_dev(manifest: Path, out_dir: Path, per_gender: int) -> tuple[int, int, list[str]]:
    """Writes ``train_minus_dev.jsonl`` and ``dev.jsonl``, disjoint by speaker."""
    rows = [json.loads(line) for line in manifest.open(encoding="utf-8")]
    by_gender: dict[str, list[str]] = defaultdict(list)
    for speaker in sorted({row["speaker"] for row in rows}):
        by_gender[speaker[0]].append(speaker)
    rng = random.Random(SPLIT_SEED)
    dev = sorted(s for group in by_gender.values() for s in rng.sample(group, per_gender))
    train = [row for row in rows if row["speaker"] not in dev]
    held = [row for row in rows if row["speaker"] in dev]
    for name, part in (("train_minus_dev.jsonl", train), ("dev.jsonl", held)):
        with (out_dir / name).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in part)
    return len(train), len(held), dev


def write_noise(out_dir: Path) -> None:
    """White, pink and brown noise (1/f^alpha power spectra), peak-normalized, as WAV files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SPLIT_SEED)
    n = NOISE_SECONDS * SAMPLE_RATE
    freqs = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
    for colour, alpha in NOISE_COLOURS.items():
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[1:] /= freqs[1:] ** (alpha / 2)
        spectrum[0] = 0.0
        noise = np.fft.irfft(spectrum, n)
        noise = 0.5 * noise / np.max(np.abs(noise))
        sf.write(out_dir / f"{colour}.wav", noise.astype(np.float32), SAMPLE_RATE)


def newest_version(root: Path) -> Path:
    versions = sorted(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        sys.exit(f"no version_* folder under {root}")
    return versions[-1]


def scalars(log_dir: Path, tags: tuple[str, ...]) -> dict[str, list[tuple[int, float, float]]]:
    """``tag -> [(step, wall_time, value)]`` from the event files of one run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float, float]]] = {}
    for path in sorted(glob.glob(str(log_dir / "events.out.tfevents*"))):
        events = EventAccumulator(path)
        events.Reload()
        for tag in tags:
            if tag in events.Tags()["scalars"]:
                out.setdefault(tag, []).extend(
                    (e.step, e.wall_time, e.value) for e in events.Scalars(tag)
                )
    return out


def best_checkpoint(ckpt_dir: Path) -> Path:
    """The checkpoint with the lowest development WER in its name (``step{N}-wer{W}.ckpt``)."""
    scored = [(float(p.stem.rsplit("-wer", 1)[1]), p) for p in ckpt_dir.glob("step*-wer*.ckpt")]
    if not scored:
        sys.exit(f"no step*-wer*.ckpt checkpoint in {ckpt_dir}")
    return min(scored)[1]


def test(config: Path, ckpt: Path, out: Path, log_path: Path) -> tuple[float, float]:
    cmd = ["asr-lightning", "test", "--config", str(config), "--ckpt_path", str(ckpt)]
    cmd += ["--trainer.logger.init_args.save_dir", str(out), "--trainer.logger.init_args.name", ""]
    cmd += ["--trainer.enable_progress_bar", "false"]
    run(cmd, log_path)
    found = scalars(newest_version(out), ("test/wer", "test/cer"))
    return found["test/wer"][-1][2], found["test/cer"][-1][2]


def with_lm(
    candidates: dict[str, Path],
    work: Path,
    log_path: Path,
    beam: int,
    grid: tuple[tuple[float, ...], tuple[float, ...]],
) -> dict:
    """Step 6: the dev-chosen model, a 3-gram from the training transcripts with weights
    chosen on dev, and its test WER (the test set is decoded once, after every choice)."""
    from inference_speed import _beam, _read, _texts_with, _tune_lm, _wer

    from asr_lightning.inference.transcriber import Transcriber

    dev, test_manifest = REPO / MANIFESTS / "dev.jsonl", REPO / MANIFESTS / "test.jsonl"
    dev_wers, transcribers = {}, {}
    for name, folder in candidates.items():
        transcribers[name] = transcriber = Transcriber.from_pretrained(folder)
        _, audios, references = _read(dev, transcriber.tokenizer)
        dev_wers[name] = _wer(references, [r.text for r in transcriber.transcribe_arrays(audios)])
    chosen = min(dev_wers, key=dev_wers.__getitem__)
    print(f"dev WER greedy: {dev_wers} -> {chosen}")
    lm = work / "train_3gram.arpa"
    build = [sys.executable, "scripts/build_ngram.py", str(MANIFESTS / "train_minus_dev.jsonl")]
    run([*build, "--model", str(candidates[chosen]), "--order", "3", "--output", str(lm)], log_path)
    transcriber = transcribers[chosen]
    tuned = _tune_lm(transcriber, dev, str(lm), beam, *grid)
    _, audios, references = _read(test_manifest, transcriber.tokenizer)
    decoder = _beam(transcriber, str(lm), beam, alpha=tuned["alpha"], beta=tuned["beta"])
    return {
        "chosen": chosen,
        "dev_wers": dev_wers,
        "tuned": tuned,
        "test_lm": _wer(references, _texts_with(transcriber, decoder, audios)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--an4", type=Path, default=REPO.parent / "shared/data/an4")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/an4_quality"))
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall-clock limit")
    parser.add_argument("--target-wer", type=float, default=TARGET_WER)
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument(
        "--average", type=int, default=0, metavar="K",
        help="also test the average of the K best checkpoints by dev WER (fit keeps K)",
    )  # fmt: skip
    parser.add_argument(
        "--lm", action="store_true",
        help="also decode the dev-chosen model with a training-transcript 3-gram (weights on dev)",
    )  # fmt: skip
    parser.add_argument(
        "--reuse-fit", action="store_true",
        help="no training: steps 5-6 on the newest fit of --work-dir (its --extra and --average)",
    )  # fmt: skip
    parser.add_argument("--beam-width", type=int, default=32, help="beam of the --lm row")
    parser.add_argument(
        "--lm-alphas", type=float, nargs="+", default=LM_ALPHAS, metavar="A",
        help="LM weights tried on dev for the --lm row",
    )  # fmt: skip
    parser.add_argument(
        "--lm-betas", type=float, nargs="+", default=LM_BETAS, metavar="B",
        help="word bonuses tried on dev for the --lm row",
    )  # fmt: skip
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more fit options")
    args = parser.parse_args(argv)

    prepare = ["asr-lightning", "data", "prepare", "an4", str(args.an4), str(MANIFESTS)]
    run(prepare, Path("/dev/null"))
    n_train, n_dev, dev = split_dev(
        REPO / MANIFESTS / "train.jsonl", REPO / MANIFESTS, DEV_SPEAKERS_PER_GENDER
    )
    print(f"train {n_train} / dev {n_dev} utterances (dev speakers: {' '.join(dev)})")
    write_noise(REPO / MANIFESTS / "noise")
    if args.prepare_only:
        return 0

    work = REPO / args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "log.txt"
    limit = time.strftime("%H:%M:%S", time.gmtime(args.minutes * 60))
    fit_cmd = ["asr-lightning", "fit", "--config", str(args.config)]
    fit_cmd += ["--trainer.max_time", f"00:{limit}", "--trainer.enable_progress_bar", "false"]
    fit_cmd += ["--trainer.default_root_dir", str(work / "fit")]
    fit_cmd += ["--trainer.logger.init_args.save_dir", str(work / "fit")]
    fit_cmd += ["--trainer.logger.init_args.name", ""]
    if args.average:  # keep the K best (the config keeps 2); what is trained does not change
        fit_cmd += ["--checkpoint.save_top_k", str(max(args.average, 2))]
    fit_cmd += args.extra
    started_file = work / "fit_started.txt"
    if args.reuse_fit:
        fit_started, fit_seconds = (float(v) for v in started_file.read_text().split())
    else:
        fit_started = time.time()
        fit_seconds = run(fit_cmd, log_path)
        started_file.write_text(f"{fit_started} {fit_seconds}\n")

    fit_dir = newest_version(work / "fit")
    curve = scalars(fit_dir, ("val/wer", "val/cer", "train/loss"))
    best = best_checkpoint(fit_dir / "checkpoints")
    fit_config = fit_dir / "config.yaml"  # the fit's own settings (--extra included)
    best_wer, best_cer = test(fit_config, best, work / "test_best", log_path)
    last_wer, last_cer = test(
        fit_config, fit_dir / "checkpoints/last.ckpt", work / "test_last", log_path
    )
    if args.average:
        averaged = work / f"averaged_best{args.average}.ckpt"
        average_cmd = ["asr-lightning", "average", str(fit_dir), "--best", str(args.average)]
        averaged_hf = work / f"averaged_best{args.average}_hf"
        run([*average_cmd, "--output", str(averaged), "--hf-output", str(averaged_hf)], log_path)
        avg_wer, avg_cer = test(fit_config, averaged, work / "test_averaged", log_path)
    if args.lm:  # hf_model/ is the best checkpoint's
        candidates = {"best on dev": fit_dir / "hf_model"}
        if args.average:
            candidates[f"average of the {args.average} best"] = averaged_hf
        grid = (tuple(args.lm_alphas), tuple(args.lm_betas))
        lm = with_lm(candidates, work, log_path, args.beam_width, grid)

    print(f"\nfit (start-up + training + end-of-fit export): {fit_seconds / 60:.1f} min")
    print(f"run folder: {fit_dir}")
    losses = curve["train/loss"]
    recent = [value for step, _, value in losses if step > losses[-1][0] - 1000]
    print(f"mean training loss over the last 1000 steps: {sum(recent) / len(recent):.3g}\n")
    print("| checkpoint | test WER | test CER |\n| --- | --- | --- |")
    print(f"| best on dev ({best.name}) | {100 * best_wer:.1f}% | {100 * best_cer:.1f}% |")
    print(f"| last | {100 * last_wer:.1f}% | {100 * last_cer:.1f}% |")
    if args.average:
        print(
            f"| average of the {args.average} best on dev | {100 * avg_wer:.1f}% | "
            f"{100 * avg_cer:.1f}% |"
        )
    if args.lm:
        tuned = lm["tuned"]
        dev_wers = ", ".join(f"{k} {v:.1f}%" for k, v in lm["dev_wers"].items())
        print(
            f"| {lm['chosen']} (chosen on dev, greedy dev WER {dev_wers}) + 3-gram of the "
            f"training transcripts, beam {args.beam_width}, "
            f"alpha {tuned['alpha']} beta {tuned['beta']} (chosen on dev: "
            f"{tuned['dev_wer']:.1f}%) | **{lm['test_lm']:.1f}%** | |"
        )
        if tuned["at_edge"]:
            print(f"(the dev choice is the grid's largest {' and '.join(tuned['at_edge'])})")
    print()
    print("| minutes since fit started | step | dev WER | dev CER |")
    print("| --- | --- | --- | --- |")
    cers = {step: value for step, _, value in curve["val/cer"]}
    for step, wall, wer in curve["val/wer"]:
        print(
            f"| {(wall - fit_started) / 60:.1f} | {step} | {100 * wer:.1f}% | "
            f"{100 * cers.get(step, float('nan')):.1f}% |"
        )
    # the verdict is on the model dev chose (--lm chooses between the best and the average)
    greedy = {"best on dev": best_wer}
    if args.average:
        greedy[f"average of the {args.average} best"] = avg_wer
    chosen = lm["chosen"] if args.lm else "best on dev"
    hit = greedy[chosen] <= args.target_wer
    print(
        f"\ntarget test WER <= {100 * args.target_wer:.0f}% ({chosen}, greedy: "
        f"{100 * greedy[chosen]:.1f}%): {'met' if hit else 'MISSED'}"
    )
    return 0 if hit else 1


if __name__ == "__main__":
    sys.exit(main())
