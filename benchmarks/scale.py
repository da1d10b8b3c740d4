"""Common Voice-sized manifests: set-up time, main-process memory and worker memory over an epoch.

    python benchmarks/scale.py                        # 10k, 100k and 1M utterances (~15 min)
    python benchmarks/scale.py --sizes 10000 100000 --layouts columns objects

For each size it writes (once, under ``--workdir``) a JSONL manifest of that many utterances with
unique transcripts (3 to 12 random AN4 words, the worst case for anything cached per text), each
naming its own audio file (a symlink to one short real WAV clip, so that every row has its own
path and the epoch's decoding stays cheap), in two variants: durations in the manifest, and no
durations with the durations in the SQLite duration cache (as a previous ``data check
--duration-cache`` or ``fit`` leaves it; the cache is keyed by path, size and mtime, so all
million files are stat'ed).

Each measurement runs in a fresh child process: ``ASRDataModule.setup("fit")`` on the train
manifest (the quickstart model's vocabulary and frame rate), timed; the main process's peak RSS
after set-up; then one epoch of the real training DataLoader with 2 forked workers, sampling each
worker's unique set size (USS: pages no other process shares) every 5 % of the epoch; the
growth of USS from the first sample to the last is what copy-on-read costs. ``objects`` swaps
the columnar table for the list of ``Item`` objects the data module used to hold (the layout
before), to show that growth. Last, a mid-epoch resume: the sampler's state after 40 % of the
epoch is loaded into a new sampler, which must yield exactly the remaining batches.

Goal (issue 13): 1M utterances set up in 20 s or less, main RSS 1 GB or less, worker USS flat
over the epoch, mid-epoch resume exact.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SIZES = (10_000, 100_000, 1_000_000)
#: The quickstart model: its vocabulary and 25 output frames per second decide the CTC filter.
MODEL = {
    "model_type": "parakeet_ctc",
    "config_overrides": {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "subsampling_conv_channels": 8,
        "subsampling_factor": 4,
        "num_mel_bins": 80,
    },
}
#: Speech rate used to give each synthetic transcript a plausible duration.
CHARS_PER_SECOND = 14.0
CLIP_SECONDS = 0.05
SAMPLES = 20  # USS samples over the epoch


def _words() -> list[str]:
    rows = (REPO / "data/quickstart/train.jsonl").read_text().splitlines()
    return sorted({w for line in rows for w in json.loads(line)["text"].split()})


def write_inputs(workdir: Path, size: int) -> dict[str, Path]:
    """The two manifests of ``size`` rows and their duration cache (made once)."""
    from asr_lightning.data.durations import DurationCache, file_key

    out = workdir / str(size)
    paths = {
        "manifest": out / "with_durations.jsonl",
        "cache": out / "without_durations.jsonl",
        "db": out / "durations.sqlite",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    out.mkdir(parents=True, exist_ok=True)
    clip = workdir / "clip.wav"
    if not clip.exists():
        rng = np.random.default_rng(0)
        sf.write(clip, 0.05 * rng.standard_normal(int(16_000 * CLIP_SECONDS)), 16_000)
    links = out / "audio"
    rng, words = random.Random(size), _words()
    cache = DurationCache(paths["db"])
    with paths["manifest"].open("w") as with_d, paths["cache"].open("w") as without_d:
        pending = []
        for i in range(size):
            audio = links / f"{i // 1000:04d}" / f"utt{i:07d}.wav"
            if i % 1000 == 0:
                audio.parent.mkdir(parents=True, exist_ok=True)
            if not audio.is_symlink():
                audio.symlink_to(clip)
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            duration = round(min(15.0, 0.5 + len(text) / CHARS_PER_SECOND), 3)
            row = {"audio_filepath": str(audio), "text": text, "id": f"utt{i:07d}"}
            without_d.write(json.dumps(row) + "\n")
            with_d.write(json.dumps({**row, "duration": duration}) + "\n")
            pending.append((file_key(audio), duration))
            if len(pending) == 50_000:
                cache.put_many(pending)
                pending = []
        cache.put_many(pending)
    return paths


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    manifest: Path,
    db: Path | None,
    layout: str,
    workers: int,
    fraction: float = 1.0,
    setup_workers: int | None = None,
) -> dict[str, Any]:
    """One child process's measurements (see the module docstring)."""
    import psutil

    from asr_lightning.training.datamodule import ASRDataModule

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started, cpu = time.perf_counter(), time.process_time()
    data = ASRDataModule(
        train=str(manifest),
        model_type=MODEL["model_type"],
        model_config_overrides=MODEL["config_overrides"],
        min_duration_s=0.3,
        max_duration_s=18.0,
        max_batch_seconds=200.0,
        num_workers=workers,
        duration_cache=str(db) if db else None,
        setup_workers=setup_workers,
    )
    data.setup("fit")
    setup_s, setup_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the set-up pool, exited
    setup_cpu_s += children.ru_utime + children.ru_stime
    main_rss_mb = _rss_mb()
    dataset = data.datasets["train"]["train"]
    table_mb = getattr(dataset.items, "nbytes", 0) / 1e6
    loader = data.train_dataloader()
    sampler = data._train_sampler
    if layout == "objects":  # the layout before: one Python object per row
        dataset.items = list(dataset.items)
    batches = max(1, int(len(loader) * fraction))
    every = max(1, batches // SAMPLES)
    me = psutil.Process()
    uss: dict[int, list[float]] = {}
    seen = 0
    epoch_started = time.perf_counter()
    for index, batch in enumerate(loader):
        if index == batches:
            break
        seen += len(batch["ids"]) + len(batch["skipped"])
        if index % every == 0 or index == batches - 1:
            for child in me.children():
                try:
                    uss.setdefault(child.pid, []).append(child.memory_full_info().uss / 2**20)
                except psutil.NoSuchProcess:
                    pass
    epoch_s = time.perf_counter() - epoch_started
    del loader

    # mid-epoch resume: the rest of the epoch from a saved position, exactly
    from asr_lightning.data.bucketing import DurationBucketSampler

    done = int(0.4 * sampler.batches_per_epoch)
    sampler.set_epoch(1)
    plan = list(sampler)
    state = sampler.state_dict(batches_done=done)
    resumed = DurationBucketSampler(
        dataset.durations if layout == "columns" else sampler.durations,
        max_batch_seconds=200.0,
        num_buckets=data.num_buckets,
        shuffle=True,
        seed=data.seed,
    )
    t = time.perf_counter()
    resumed.load_state_dict(state)
    rest = list(resumed)
    resume_s = time.perf_counter() - t
    return {
        "rows": data.reports["train/train"].total,
        "setup_workers": data._setup_workers(),
        "kept": len(dataset),
        "setup_s": round(setup_s, 2),
        "setup_cpu_s": round(setup_cpu_s, 2),
        "main_rss_mb": round(main_rss_mb),
        "table_mb": round(table_mb, 1),
        "epoch_s": round(epoch_s, 1),
        "items_seen": seen,
        "worker_uss_first_mb": [round(v[0]) for v in uss.values()],
        "worker_uss_last_mb": [round(v[-1]) for v in uss.values()],
        "worker_uss_growth_mb": [round(v[-1] - v[0], 1) for v in uss.values()],
        "resume_exact": rest == plan[done:],
        "resume_s": round(resume_s, 2),
    }


def _child(args: argparse.Namespace) -> int:
    result = measure(
        Path(args.manifest),
        Path(args.db) if args.db else None,
        args.layout,
        args.workers,
        args.epoch_fraction,
        args.setup_workers[0] if args.setup_workers else None,
    )
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _run_child(
    manifest: Path,
    db: Path | None,
    layout: str,
    workers: int,
    fraction: float,
    setup_workers: int | None,
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--manifest", str(manifest)]
    command += ["--layout", layout, "--workers", str(workers), "--epoch-fraction", str(fraction)]
    if setup_workers is not None:
        command += ["--setup-workers", str(setup_workers)]
    if db:
        command += ["--db", str(db)]
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT ") :]), "load_before": round(load, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--layouts", nargs="+", default=["columns", "objects"], choices=["columns", "objects"]
    )
    parser.add_argument("--durations", nargs="+", default=["manifest", "cache"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--epoch-fraction",
        type=float,
        default=1.0,
        help="train batches of the epoch to load (rows are shuffled: 0.25 already touches "
        "nearly every page of the table)",
    )
    parser.add_argument(
        "--setup-workers",
        type=int,
        nargs="+",
        help="processes setting up the manifest, one row each (default: the data module's)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/asr_lightning_scale"))
    parser.add_argument("--result", type=Path, help="write the rows as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--layout", default="columns", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)

    rows = []
    for size in args.sizes:
        t = time.perf_counter()
        inputs = write_inputs(args.workdir, size)
        print(f"[{size}] inputs ready in {time.perf_counter() - t:.0f} s", flush=True)
        for durations in args.durations:
            manifest = inputs["manifest"] if durations == "manifest" else inputs["cache"]
            db = inputs["db"] if durations == "cache" else None
            for layout in args.layouts:
                if layout == "objects" and durations == "cache":
                    continue  # the layout comparison needs one variant only
                for setup_workers in args.setup_workers or [None]:
                    row = {
                        "size": size,
                        "durations": durations,
                        "layout": layout,
                        **_run_child(
                            manifest, db, layout, args.workers, args.epoch_fraction, setup_workers
                        ),
                        "epoch_fraction": args.epoch_fraction,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)

    print()
    header = (
        f"{'rows':>9} {'durations':>9} {'layout':>8} {'set-up procs':>12} {'setup s':>8} "
        f"{'cpu s':>6} "
        f"{'main RSS MB':>11} {'table MB':>8} {'epoch s':>7} {'worker USS MB first->last':>28} "
        f"{'resume':>7}"
    )
    print(header)
    for r in rows:
        uss = ", ".join(
            f"{a}->{b}"
            for a, b in zip(r["worker_uss_first_mb"], r["worker_uss_last_mb"], strict=True)
        )
        print(
            f"{r['size']:>9} {r['durations']:>9} {r['layout']:>8} {r['setup_workers']:>12} "
            f"{r['setup_s']:>8.1f} "
            f"{r['setup_cpu_s']:>6.1f} {r['main_rss_mb']:>11} {r['table_mb']:>8.1f} "
            f"{r['epoch_s']:>7.1f} {uss:>28} {'exact' if r['resume_exact'] else 'WRONG':>7}"
        )
    if args.result:
        args.result.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
