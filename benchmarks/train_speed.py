"""Training speed: asr-lightning against the Hugging Face ``Trainer`` CTC recipe, on AN4.

    python benchmarks/train_speed.py                  # both systems, 5 epochs each (~15 min)
    python benchmarks/train_speed.py --epochs 2 --systems ours

The baseline is ``run_speech_recognition_ctc.py`` as it trains: every utterance's features
computed once up front with ``datasets.map`` (the recipe's ``prepare_dataset``), random batches of
16 utterances padded by the recipe's ``DataCollatorCTCWithPadding``, ``transformers.Trainer``
with AdamW and a warmup schedule. asr-lightning trains the same model (Parakeet CTC with the
``model.config_overrides`` of the config, default ``configs/an4.yaml``), built the same way
under the same seed, on the same utterances, with the same optimizer, schedule, number of
epochs and optimizer steps: its duration-bucketed batches are capped (``max_batch_seconds``) so
that an epoch has as many batches as the baseline's, hence the same mean real audio per step.

Each system runs in a fresh child process (clean peak memory, no shared torch state); the
parent prints, per system: audio seconds trained per wall second, padding share of the frames
of the batches, data wait vs compute per step, peak RSS (main process, and the proportional set
size of the main process plus its workers), RSS growth from the first to the last epoch, and
the WER/CER both reach on AN4 test with the same greedy decoding; then the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
HOP_SECONDS = 0.01  # Parakeet log-mel frames: 10 ms hop at 16 kHz
SYSTEMS = ("baseline", "ours")

log = logging.getLogger("train_speed")


# ----------------------------------------------------------------------------- measurements
class Meter:
    """Per-step data wait and compute, padding and audio seconds, epoch walls and memory."""

    def __init__(self) -> None:
        self.data_s: list[float] = []
        self.compute_s: list[float] = []
        self.frames = 0  # real feature frames
        self.padded_frames = 0  # frames processed, padding included
        self.epoch_s: list[float] = []
        self.epoch_rss_mb: list[float] = []
        self.epoch_main_rss_mb: list[float] = []
        self.epoch_pss_mb: list[float] = []
        self._mark = 0.0
        self._epoch_start = 0.0
        self._sampler = PssSampler()

    def epoch_start(self) -> None:
        self._epoch_start = self._mark = time.perf_counter()
        self._sampler.start()

    def batch(self, mask: torch.Tensor) -> None:
        """A batch arrived (``mask``: (B, T) attention mask over feature frames)."""
        now = time.perf_counter()
        self.data_s.append(now - self._mark)
        self._mark = now
        self.frames += int(mask.sum())
        self.padded_frames += mask.numel()

    def step_end(self) -> None:
        now = time.perf_counter()
        self.compute_s.append(now - self._mark)
        self._mark = now

    def epoch_end(self) -> None:
        self.epoch_s.append(time.perf_counter() - self._epoch_start)
        self.epoch_rss_mb.append(tree_memory_mb("rss"))
        self.epoch_main_rss_mb.append(main_rss_mb())
        self.epoch_pss_mb.append(tree_memory_mb("pss"))
        print(
            f"  epoch {len(self.epoch_s)}: {self.epoch_s[-1]:.1f} s, {len(self.compute_s)} steps, "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    def result(self) -> dict[str, Any]:
        wall = sum(self.epoch_s)
        audio_s = self.frames * HOP_SECONDS
        steps = len(self.compute_s)
        return {
            "steps": steps,
            "train_wall_s": wall,
            "audio_s_trained": audio_s,
            "audio_s_per_s": audio_s / wall,
            "mean_audio_s_per_step": audio_s / max(steps, 1),
            "padding_fraction": 1 - self.frames / max(self.padded_frames, 1),
            "data_s": sum(self.data_s),
            "compute_s": sum(self.compute_s),
            "data_fraction": sum(self.data_s) / max(sum(self.data_s) + sum(self.compute_s), 1e-9),
            "epoch_s": self.epoch_s,
            "epoch_tree_rss_mb": self.epoch_rss_mb,
            "epoch_main_rss_mb": self.epoch_main_rss_mb,
            "epoch_tree_pss_mb": self.epoch_pss_mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_tree_pss_mb": self._sampler.peak_mb,
        }


def tree_memory_mb(kind: str = "rss") -> float:
    """``rss`` or ``pss`` of this process and its children (workers) together, in MB."""
    import psutil

    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            info = proc.memory_info() if kind == "rss" else proc.memory_full_info()
            total += getattr(info, kind)
        except psutil.Error:
            pass
    return total / 1e6


def main_rss_mb() -> float:
    """Resident memory of this process alone, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


class PssSampler:
    """Peak proportional set size of this process and its children, sampled every second.

    PSS splits each shared page between the processes sharing it, so pages a forked worker
    shares with the main process are not counted twice (RSS would count them twice).
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, tree_memory_mb("pss"))
            time.sleep(self.interval_s)


# ----------------------------------------------------------------------------- shared set-up
def load_settings(config: Path) -> dict[str, Any]:
    """Model and optimizer settings from an asr-lightning config (shared by both systems)."""
    cfg = yaml.safe_load(config.read_text())
    model, data, trainer = cfg.get("model", {}), cfg.get("data", {}), cfg.get("trainer", {})
    return {
        "config": str(config),
        "seed": cfg.get("seed_everything", 42),
        "config_overrides": model["config_overrides"],
        "learning_rate": model.get("learning_rate", 1e-4),
        "weight_decay": model.get("weight_decay", 0.005),
        "warmup_ratio": model.get("warmup_ratio", 0.05),
        "scheduler": model.get("scheduler", "linear"),
        "gradient_clip_val": trainer.get("gradient_clip_val") or 0.0,
        "level": data.get("level", "none"),
        "min_duration_s": data.get("min_duration_s", 1.0),
        "max_duration_s": data.get("max_duration_s", 18.0),
    }


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    from asr_lightning.data.prepare import prepare_an4

    out = args.work_dir / "manifests"
    if not (out / "train.jsonl").exists():
        prepare_an4(args.an4, out)
    return out / "train.jsonl", out / "test.jsonl"


def datamodule(args, settings, *, max_batch_seconds: float, cache_audio: bool):
    from asr_lightning.training.datamodule import ASRDataModule

    train, test = prepare(args)
    dm = ASRDataModule(
        train=str(train),
        test=str(test),
        model_type="parakeet_ctc",
        model_config_overrides=settings["config_overrides"],
        max_batch_seconds=max_batch_seconds,
        eval_max_batch_seconds=120.0,
        num_workers=args.workers,
        cache_audio=cache_audio,
        level=settings["level"],
        min_duration_s=settings["min_duration_s"],
        max_duration_s=settings["max_duration_s"],
        duration_cache=str(args.work_dir / "durations.sqlite"),
        seed=settings["seed"],
    )
    dm.setup("fit")
    dm.setup("test")
    return dm


def build_module(dm, settings):
    import lightning

    from asr_lightning.training.module import CTCModule

    lightning.seed_everything(settings["seed"], workers=True)
    module = CTCModule(
        model_name_or_path=None,
        model_type="parakeet_ctc",
        config_overrides=settings["config_overrides"],
        vocab=dm.vocab,
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        warmup_ratio=settings["warmup_ratio"],
        scheduler=settings["scheduler"],
    )
    module.configure_model()
    return module


def cap_for_steps(durations: list[float], steps: int, seed: int) -> float:
    """Smallest ``max_batch_seconds`` whose bucketed epoch has at most ``steps`` batches."""
    from asr_lightning.data.bucketing import DurationBucketSampler

    def batches(cap: float) -> int:
        return len(DurationBucketSampler(durations, max_batch_seconds=cap, shuffle=True, seed=seed))

    low, high = max(durations), max(durations) * len(durations)
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if batches(mid) > steps else (low, mid)
    return math.ceil(high * 10) / 10


def evaluate(model, tokenizer, dm) -> dict[str, float]:
    """WER/CER on AN4 test: the same batches and greedy decoding for both systems."""
    import jiwer

    from asr_lightning.decoding.decoder import CTCDecoder
    from asr_lightning.model.ctc import output_lengths
    from asr_lightning.model.families import blank_token_id
    from asr_lightning.model.features import samples_per_frame

    model.eval()
    decoder = CTCDecoder(
        tokenizer, blank_token_id(model.config), samples_per_frame(model, dm.feature_extractor)
    )
    refs, hyps = [], []
    with torch.inference_mode():
        for batch in dm.test_dataloader()[0]:
            if not batch["ids"]:
                continue
            logits = model(
                input_features=batch["input_features"], attention_mask=batch["attention_mask"]
            ).logits  # (B, T, V)
            lengths = output_lengths(model, batch).clamp(max=logits.shape[1])
            hyps += decoder.texts(logits, lengths)  # as every runtime decodes
            refs += batch["texts"]
    return {
        "wer": jiwer.wer(refs, hyps),
        "cer": jiwer.cer(refs, hyps),
        "test_utterances": len(refs),
    }


# ----------------------------------------------------------------------------- the baseline
class DataCollatorCTCWithPadding:
    """The recipe's collator (``run_speech_recognition_ctc.py``), for a feature extractor and a
    tokenizer instead of a processor holding both."""

    def __init__(self, feature_extractor, tokenizer, padding: bool | str = True) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.padding = padding
        self.input_name = feature_extractor.model_input_names[0]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_features = [{self.input_name: f[self.input_name]} for f in features]
        label_features = [{"input_ids": f["labels"]} for f in features]
        batch = self.feature_extractor.pad(
            input_features, padding=self.padding, return_tensors="pt"
        )
        labels_batch = self.tokenizer.pad(label_features, padding=self.padding, return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        batch["labels"] = labels
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].to(torch.long)
        return batch


def recipe_dataset(dm, feature_extractor, tokenizer):
    """The recipe's ``vectorized_datasets["train"]``: features and labels computed once."""
    import datasets

    from asr_lightning.audio.augment import normalize_level
    from asr_lightning.audio.decode import SAMPLE_RATE, load_audio

    items = dm.datasets["train"]["train"].items
    raw = datasets.Dataset.from_dict(
        {"path": [i.audio for i in items], "target_text": [i.text for i in items]}
    )
    level = dm.level

    def prepare_dataset(batch):
        audio = normalize_level(load_audio(batch["path"]), level)
        inputs = feature_extractor(audio, sampling_rate=SAMPLE_RATE)
        batch["input_features"] = np.asarray(inputs.input_features[0])  # (T, F)
        batch["input_length"] = len(audio)
        batch["labels"] = tokenizer(batch["target_text"]).input_ids
        return batch

    datasets.disable_progress_bars()
    # the recipe's default preprocessing_num_workers: None, one process. One torch thread: per
    # utterance, a second thread costs more in synchronisation than it saves (set-up only).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return raw.map(prepare_dataset, remove_columns=raw.column_names)
    finally:
        torch.set_num_threads(threads)


def run_baseline(args, settings) -> dict[str, Any]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    setup_start = time.perf_counter()
    dm = datamodule(args, settings, max_batch_seconds=200.0, cache_audio=False)
    module = build_module(dm, settings)
    model, feature_extractor, tokenizer = module.model, module.feature_extractor, module.tokenizer
    train = recipe_dataset(dm, feature_extractor, tokenizer)
    setup_s = time.perf_counter() - setup_start
    meter = Meter()

    class Timing(TrainerCallback):
        def on_epoch_begin(self, *_a, **_k):
            meter.epoch_start()

        def on_step_end(self, *_a, **_k):
            meter.step_end()

        def on_epoch_end(self, *_a, **_k):
            meter.epoch_end()

    class MeasuredTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            meter.batch(inputs["attention_mask"])
            return super().training_step(model, inputs, num_items_in_batch)

    training_args = TrainingArguments(
        output_dir=str(args.work_dir / "baseline"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=settings["learning_rate"],
        weight_decay=settings["weight_decay"],
        warmup_steps=settings["warmup_ratio"],  # a float < 1 is a ratio in transformers 5
        lr_scheduler_type=settings["scheduler"],
        max_grad_norm=settings["gradient_clip_val"],
        seed=settings["seed"],
        dataloader_num_workers=args.workers,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = MeasuredTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=DataCollatorCTCWithPadding(feature_extractor, tokenizer),
        callbacks=[Timing()],
    )
    trainer.train()
    return {
        "setup_s": setup_s,
        "effective_batch": f"{args.batch_size} utterances, random",
        **meter.result(),
        **evaluate(model, tokenizer, dm),
    }


# ----------------------------------------------------------------------------- asr-lightning
def run_ours(args, settings) -> dict[str, Any]:
    import lightning

    from asr_lightning.training.memory import ReleaseMemory

    setup_start = time.perf_counter()
    probe = datamodule(args, settings, max_batch_seconds=200.0, cache_audio=False)
    durations = probe.datasets["train"]["train"].durations
    baseline_steps = math.ceil(len(durations) / args.batch_size)
    cap = cap_for_steps(durations, baseline_steps, settings["seed"])
    dm = datamodule(args, settings, max_batch_seconds=cap, cache_audio=not args.no_cache)
    module = build_module(dm, settings)
    setup_s = time.perf_counter() - setup_start
    meter = Meter()

    class Timing(lightning.Callback):
        def on_train_epoch_start(self, *_a):
            meter.epoch_start()

        def on_train_batch_start(self, _trainer, _module, batch, _index):
            meter.batch(batch["attention_mask"])

        def on_train_batch_end(self, *_a):
            meter.step_end()

        def on_train_epoch_end(self, *_a):
            meter.epoch_end()

    trainer = lightning.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        gradient_clip_val=settings["gradient_clip_val"] or None,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        # ReleaseMemory as asr-lightning fit adds it, before Timing measures the epoch's memory
        callbacks=[ReleaseMemory(enabled=not args.no_release_memory), Timing()],
        default_root_dir=str(args.work_dir / "ours"),
    )
    trainer.fit(module, datamodule=dm)
    return {
        "setup_s": setup_s,
        "effective_batch": f"max_batch_seconds={cap} (bucketed, {baseline_steps} batches/epoch)",
        "cache_audio": not args.no_cache,
        **meter.result(),
        **evaluate(module.model, module.tokenizer, dm),
    }


# ----------------------------------------------------------------------------- driver
def child(args: argparse.Namespace) -> None:
    settings = load_settings(args.config)
    if args.seed is not None:
        settings["seed"] = args.seed
    torch.set_num_threads(args.threads or torch.get_num_threads())
    run = run_baseline if args.system == "baseline" else run_ours
    result = {
        "system": args.system,
        "settings": settings,
        "torch_threads": torch.get_num_threads(),
        "workers": args.workers,
        **run(args, settings),
    }
    args.result.write_text(json.dumps(result, indent=2))


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("audio s trained / wall s", "audio_s_per_s", "{:.1f}"),
        ("train wall s", "train_wall_s", "{:.1f}"),
        ("optimizer steps", "steps", "{:d}"),
        ("mean real audio s / step", "mean_audio_s_per_step", "{:.1f}"),
        ("padding share of frames", "padding_fraction", "{:.1%}"),
        ("data wait share of step time", "data_fraction", "{:.1%}"),
        ("data wait s / compute s", None, None),
        ("set-up s (not in train wall)", "setup_s", "{:.1f}"),
        ("peak RSS main MB", "peak_rss_mb", "{:.0f}"),
        ("peak PSS main+workers MB", "peak_tree_pss_mb", "{:.0f}"),
        ("RSS main+workers (shared pages counted twice), epoch 1 -> last, MB", None, None),
        ("RSS main, epoch 2 -> last, MB", "epoch_main_rss_mb", None),
        ("PSS main+workers, epoch 2 -> last, MB", "epoch_tree_pss_mb", None),
        ("test WER", "wer", "{:.3f}"),
        ("test CER", "cer", "{:.3f}"),
    ]
    names = [name for name in SYSTEMS if name in results]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in rows:
        cells = []
        for name in names:
            r = results[name]
            if key is None and label.startswith("data wait s /"):
                cells.append(f"{r['data_s']:.1f} / {r['compute_s']:.1f}")
            elif fmt is None and key is not None:  # per-epoch memory: epoch 2 (warm) -> last
                series = r.get(key) or [float("nan")]
                cells.append(f"{series[min(1, len(series) - 1)]:.0f} -> {series[-1]:.0f}")
            elif key is None:
                rss = r["epoch_tree_rss_mb"]
                cells.append(f"{rss[0]:.0f} -> {rss[-1]:.0f}")
            else:
                cells.append(fmt.format(r[key]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "an4.yaml")
    parser.add_argument("--an4", type=Path, default=REPO.parent / "shared" / "data" / "an4")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "train_speed")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="baseline utterances/batch")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (both)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-cache", action="store_true", help="ours without cache_audio")
    parser.add_argument(
        "--no-release-memory", action="store_true", help="ours without the ReleaseMemory callback"
    )
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="run both systems once per seed (default: the config's)",
    )
    args = parser.parse_args(argv)
    if not args.config.exists():  # the AN4 config is optional: the quickstart model then
        args.config = REPO / "configs" / "quickstart.yaml"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.system:
        return child(args)
    print(f"load average before: {os.getloadavg()}", flush=True)
    seeds = args.seeds or [None]
    passed = argv or sys.argv[1:]  # a child runs one system and seed, and ignores --seeds
    runs: list[dict[str, dict]] = []
    for seed in seeds:
        results = {}
        seed_args = [] if seed is None else ["--seed", str(seed)]
        for system in args.systems:
            name = system if seed is None else f"{system}.seed{seed}"
            out = args.work_dir / f"{name}.json"
            cmd = [sys.executable, __file__, *passed, *seed_args, "--system", system]
            print(f"== {system}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run([*cmd, "--result", str(out)], check=True)
            results[system] = json.loads(out.read_text())
        runs.append(results)
        print(f"load average after: {os.getloadavg()}")
        print(
            f"config: {args.config}, {args.epochs} epochs, workers {args.workers}, seed "
            f"{results[args.systems[0]]['settings']['seed']}"
        )
        for name, r in results.items():
            print(
                f"{name}: effective batch {r['effective_batch']}, "
                f"torch threads {r['torch_threads']}"
            )
        print(table(results))
        if len(results) == 2:
            base, ours = results["baseline"], results["ours"]
            print(
                f"ratio ours/baseline: {speed_ratio(results):.2f}x audio s/s,"
                f" WER {ours['wer']:.3f} vs {base['wer']:.3f}"
            )
    if len(runs) > 1:
        print(summary(runs))


def speed_ratio(results: dict[str, dict]) -> float:
    """Audio seconds trained per wall second, ours over the baseline's."""
    return results["ours"]["audio_s_per_s"] / results["baseline"]["audio_s_per_s"]


def summary(runs: list[dict[str, dict]]) -> str:
    """Mean (min-max) over seeds of speed, WER and CER per system, and the speed ratio."""
    lines = [
        f"over {len(runs)} seeds: mean (min - max)",
        "| | " + " | ".join(runs[0]) + " |",
        "|---" * (len(runs[0]) + 1) + "|",
    ]
    for key, label, fmt in (
        ("audio_s_per_s", "audio s trained / wall s", "{:.1f}"),
        ("wer", "test WER", "{:.3f}"),
        ("cer", "test CER", "{:.3f}"),
    ):
        cells = []
        for system in runs[0]:
            values = [run[system][key] for run in runs]
            cells.append(
                f"{fmt.format(np.mean(values))} ({fmt.format(min(values))} - "
                f"{fmt.format(max(values))})"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if all(len(run) == 2 for run in runs):
        ratios = [speed_ratio(run) for run in runs]
        lines.append(
            f"ratio ours/baseline audio s/s: {np.mean(ratios):.2f}x "
            f"({min(ratios):.2f} - {max(ratios):.2f})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    np.seterr(all="ignore")
    main()
