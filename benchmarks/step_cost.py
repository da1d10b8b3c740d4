"""The cost of one training step of the same model on the same batches: asr-lightning's
``CTCModule`` against the plain Hugging Face model the recipe trains.

    python benchmarks/step_cost.py --family parakeet
    python benchmarks/step_cost.py --family wav2vec2 --profile   # top operators of each
    python benchmarks/step_cost.py --family parakeet --compile auto   # torch.compile too

``benchmarks/train_speed.py`` compares whole training runs, where padding, data loading and
per-step overhead all differ. This isolates the model: the first ``--steps`` batches of
asr-lightning's AN4 training DataLoader (bucketed, 47.4 s of audio each, as in train_speed),
forward and backward through (a) ``CTCModule`` (padding-guarded model, the attention mask,
its CTC loss) and (b) ``AutoModelForCTC`` with the same weights, called as the recipe calls it
(labels passed, the model's own CTC loss; no attention mask for a group-norm wav2vec2, whose
feature extractor returns none). Each side runs twice, alternating, and prints ms per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed  # noqa: E402  (the benchmark's model, data and recipe model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=train_speed.FAMILIES, default="parakeet")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--max-batch-seconds", type=float, default=47.4)
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of each")
    parser.add_argument(
        "--compile",
        choices=("dynamic", "auto"),
        help="then torch.compile the module's model (dynamic=True, or the default automatic "
        "dynamic shapes) and time it on the same batches, or print why it failed",
    )
    parser.add_argument("--work-dir", type=Path, default=train_speed.REPO / "runs" / "step_cost")
    args = parser.parse_args()
    repo = train_speed.REPO
    setup = argparse.Namespace(
        config=repo / "configs" / "an4.yaml",
        manifests=repo / "manifests" / "an4",
        an4=repo.parent / "shared" / "data" / "an4",
        work_dir=args.work_dir,
        workers=0,
        no_cache=True,
    )
    args.work_dir.mkdir(parents=True, exist_ok=True)
    settings = train_speed.load_settings(setup.config, args.family, 42)
    dm = train_speed.datamodule(setup, settings, max_batch_seconds=args.max_batch_seconds)
    module = train_speed.build_module(dm, settings)
    plain = train_speed.recipe_model(module)
    module.model.train()
    plain.train()
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == args.steps:
            break
    name = module.model.main_input_name
    takes_mask = plain.config.model_type != "wav2vec2" or plain.config.feat_extract_norm == "layer"

    def ours(batch: dict) -> None:
        logits, lengths = module(batch)
        module._loss(logits, lengths, batch["labels"]).backward()

    def recipe(batch: dict) -> None:
        inputs = {name: batch[name], "labels": batch["labels"]}
        if takes_mask:
            inputs["attention_mask"] = batch["attention_mask"]
        plain(**inputs).loss.backward()

    print(f"{args.family}: {len(batches)} batches, first {tuple(batches[0][name].shape)}")
    for run in (ours, recipe, ours, recipe):
        start = time.perf_counter()
        for batch in batches:
            run(batch)
        print(
            f"{run.__name__:>7}: {(time.perf_counter() - start) / len(batches) * 1e3:.0f} ms/step"
        )
    if args.compile:
        compiled(module, batches, ours, dynamic=args.compile == "dynamic")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for run in (ours, recipe):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for batch in batches[:6]:
                    run(batch)
            print(f"===== {run.__name__}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


def compiled(module, batches: list[dict], step, dynamic: bool) -> None:
    """Time ``step`` with ``module.model`` compiled by torch.compile (inductor), or say why
    compiling failed."""
    import torch

    module.model.compile(dynamic=True if dynamic else None)
    started = time.perf_counter()
    for index, batch in enumerate(batches):
        try:
            step(batch)
        except Exception as err:  # inductor's errors: report and stop, as a user would see it
            lines = [line for line in str(err).splitlines() if line.strip()]
            last = lines[0] if lines else ""  # inductor's first line names the error
            print(
                f"compiled ({'dynamic' if dynamic else 'auto'}): failed at batch {index} "
                f"{tuple(batch[module.model.main_input_name].shape)}: {type(err).__name__}: "
                f"{last[:200]}"
            )
            return
        if index == 0:
            print(f"compiled: first step {time.perf_counter() - started:.1f} s (compiling)")
            started = time.perf_counter()
    per_step_ms = (time.perf_counter() - started) / max(len(batches) - 1, 1) * 1e3
    print(f"compiled: {per_step_ms:.0f} ms/step after the first ({torch.__version__})")


if __name__ == "__main__":
    main()
