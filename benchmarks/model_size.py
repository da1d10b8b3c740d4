"""The real model size: the wav2vec2-base architecture (94 M parameters) through ``asr-lightning
fit`` on a CPU, with and without gradient checkpointing, and in bf16-mixed.

    python benchmarks/model_size.py                       # fp32, fp32 + checkpointing, bf16
    python benchmarks/model_size.py --steps 4 --runs fp32
    python benchmarks/model_size.py --isa avx2 --runs fp32 bf16   # as a CPU without native bf16

The checkpoint is the one a user starts from: ``Wav2Vec2Config()`` (wav2vec2-base: 12 layers of
768, a group-norm feature encoder), random weights, saved tokenizer-less with
``save_pretrained`` into a local folder, so ``fit`` builds the vocabulary from the transcripts
and a new head, and freezes the feature encoder. Each run is a fresh child process training
``--steps`` optimizer steps on AN4 training clips in fixed batches of ``--batch-size``; the
parent prints the median step time (the first step left out: it pays one-off allocations) and
the peak resident memory of the child, sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parent.parent
RUNS = {
    "fp32": {"trainer.precision": "32-true"},
    "fp32+ckpt": {"trainer.precision": "32-true", "model.gradient_checkpointing": "true"},
    "bf16": {"trainer.precision": "bf16-mixed"},
}
#: ``--isa avx2``: oneDNN and ATen restricted to AVX2, i.e. this CPU as one without native bf16.
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


class StepTimer(pl.Callback):
    """Writes the wall time of every optimizer step to ``path`` (one JSON list at the end)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)
        self.path.write_text(json.dumps(self.times))


def _peak_rss_mb(process: subprocess.Popen, interval_s: float = 0.2) -> list[float]:
    """Samples the child's resident memory until it exits; returns ``[peak]`` when done."""
    import psutil

    peak = [0.0]

    def sample() -> None:
        try:
            proc = psutil.Process(process.pid)
            while process.poll() is None:
                peak[0] = max(peak[0], proc.memory_info().rss / 1e6)
                time.sleep(interval_s)
        except psutil.Error:
            pass

    threading.Thread(target=sample, daemon=True).start()
    return peak


def save_base_checkpoint(folder: Path) -> int:
    """wav2vec2-base with random weights as a tokenizer-less folder; returns its parameters."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config())
    model.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_fit(name: str, folder: Path, manifest: Path, work: Path, args: Any) -> dict[str, Any]:
    isa = AVX2_ONLY if args.isa == "avx2" else {}
    name = f"{name}-{args.isa}"
    times = work / f"{name}.json"
    shutil.rmtree(work / name, ignore_errors=True)  # fit refuses to overwrite its config.yaml
    times.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "asr_lightning.cli", "fit",
        "--model.model_name_or_path", str(folder),
        "--model.learning_rate", "3e-5",
        "--data.train", str(manifest),
        "--data.batch_size", str(args.batch_size), "--data.max_batch_seconds", "null",
        "--data.num_workers", "0", "--data.duration_cache", "null",
        "--data.max_duration_s", "6",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", str(args.steps),
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(work / name),
        "--hf_export.dirpath", str(work / name / "hf_model"),
        f"--trainer.callbacks+={__name__ if __name__ != '__main__' else 'model_size'}.StepTimer",
        f"--trainer.callbacks.init_args.path={times}",
    ]  # fmt: skip
    for key, value in RUNS[name.rsplit("-", 1)[0]].items():
        command += [f"--{key}", value]
    env_path = f"{REPO / 'benchmarks'}:{REPO}"
    log = (work / f"{name}.log").open("w")
    process = subprocess.Popen(
        command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": env_path, "HF_HUB_OFFLINE": "1", **isa},
    )  # fmt: skip
    peak = _peak_rss_mb(process)
    code = process.wait()
    steps = json.loads(times.read_text()) if times.is_file() else []
    if code != 0 or len(steps) < 2:
        sys.exit(f"{name}: fit failed ({code}), see {work / f'{name}.log'}")
    return {"run": name, "step_s": statistics.median(steps[1:]), "steps": len(steps),
            "peak_rss_gb": peak[0] / 1e3}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from asr_lightning.model.precision import native_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "manifests/an4/train.jsonl")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs/model_size")
    parser.add_argument(
        "--isa", choices=["native", "avx2"], default="native",
        help="avx2: run as an AVX2-only CPU (oneDNN/ATen limited), where bf16 is emulated",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        sys.exit(f"{args.manifest} is missing: python benchmarks/an4_quality.py --prepare-only")
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    parameters = save_base_checkpoint(work / "wav2vec2-base")
    print(f"wav2vec2-base, random weights: {parameters / 1e6:.1f} M parameters; "
          f"native bf16 on this CPU: {native_bf16()}")  # fmt: skip
    results = [run_fit(name, work / "wav2vec2-base", args.manifest, work, args)
               for name in args.runs]  # fmt: skip
    print(f"\n| run (batch {args.batch_size}) | median s/step | peak RSS GB |")
    print("| --- | --- | --- |")
    for r in results:
        print(f"| {r['run']} | {r['step_s']:.2f} | {r['peak_rss_gb']:.2f} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
