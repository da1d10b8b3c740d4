"""Training speed: asr-lightning against the Hugging Face CTC recipe at its best, on AN4.

    python benchmarks/train_speed.py                  # 2 families x 3 systems x 3 seeds, 2 epochs
    python benchmarks/train_speed.py --epochs 15 --seeds 42 1 2 3 4 --families parakeet
    python benchmarks/train_speed.py --systems ours recipe_grouped --seeds 42

Three systems train the same model from the same weights on the same AN4 utterances, with the
same optimizer, learning-rate schedule, gradient clipping, number of epochs and optimizer steps:

- ``recipe``: ``run_speech_recognition_ctc.py`` (huggingface/transformers,
  examples/pytorch/speech-recognition) as its users run it: every utterance's features computed
  once up front with ``datasets.map`` (its ``prepare_dataset``, which also stores
  ``input_length``), random batches of ``per_device_train_batch_size`` utterances padded by its
  ``DataCollatorCTCWithPadding``, ``transformers.Trainer``. Every ``TrainingArguments`` and
  ``DataLoader`` setting is chosen for speed and justified in :func:`training_arguments`.
- ``recipe_grouped``: the same with the recipe's own answer to padding, length grouping
  (``--group_by_length --length_column_name input_length`` in the recipe's README; in
  transformers 5 ``train_sampling_strategy="group_by_length"``).
- ``ours``: asr-lightning's training path: ``ASRDataModule`` (duration buckets, decoded-audio
  cache, the model's features computed in the DataLoader workers) and ``CTCModule`` in a
  ``lightning.Trainer`` with the ``ReleaseMemory`` callback ``asr-lightning fit`` adds. Its
  seconds cap (``max_batch_seconds``) is chosen so that an epoch has as many batches as the
  recipe's, hence the same mean real audio per optimizer step.

Two model families (``--families``):

- ``parakeet``: Parakeet CTC with the ``model.config_overrides`` of ``--config``
  (``configs/an4.yaml``: 2.2 M parameters, log-mel input), and that config's optimizer settings.
- ``wav2vec2``: a small wav2vec2 (:data:`WAV2VEC2_OVERRIDES`: raw 16 kHz waveform, the standard
  conv feature encoder strides, 50 output frames per second, group norm as in wav2vec2-base),
  with the conv feature encoder frozen (the recipe's default ``freeze_feature_encoder``) and
  ``Wav2Vec2FeatureExtractor(do_normalize=True)`` input normalization.

Each (family, system, seed) runs in a fresh child process (clean peak memory, no shared torch
state). The parent prints per family: audio seconds trained per wall second, padding share of
the input frames of the batches, data wait vs compute per step, CPU seconds of the main process
and of its workers, peak memory, and the test WER/CER each reaches with the same greedy
decoding; then ours over each recipe variant, per seed and as mean and spread.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16_000
SYSTEMS = ("recipe", "recipe_grouped", "ours")
FAMILIES = ("parakeet", "wav2vec2")
DEFAULT_SEEDS = (42, 1, 2)
#: Goals of the issue: ours over each recipe variant, in audio seconds trained per wall second.
GOALS = {"recipe": 2.0, "recipe_grouped": 1.3}
#: Key under which the recipe's measuring collator passes the batch's real input frames to the
#: training step (popped there, never seen by the model).
REAL_FRAMES_KEY = "_benchmark_real_frames"

#: The small wav2vec2 of the ``wav2vec2`` family: wav2vec2-base's architecture (group-norm conv
#: feature encoder with its kernels and strides, 320 samples = 20 ms per output frame,
#: post-norm transformer, convolutional positional embedding) scaled down to train on a CPU:
#: 4 layers of hidden size 144 and 64-channel convolutions, like the Parakeet family's sizes.
#: Dropouts, LayerDrop and SpecAugment are the recipe's ``ModelArguments`` defaults.
WAV2VEC2_OVERRIDES: dict[str, Any] = {
    "hidden_size": 144,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 576,
    "conv_dim": [64] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "feat_extract_norm": "group",
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "hidden_dropout": 0.0,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
}
#: Optimizer settings of the wav2vec2 family (the Parakeet family takes the config's). A post-norm
#: transformer from scratch needs a lower peak rate than the Parakeet config's 3e-3.
WAV2VEC2_OPTIMIZER = {"learning_rate": 1e-3, "weight_decay": 1e-3, "warmup_ratio": 0.1}

log = logging.getLogger("train_speed")


# ----------------------------------------------------------------------------- measurements
class Meter:
    """Per-step data wait and compute, padding, utterances, epoch walls, CPU time and memory."""

    def __init__(self) -> None:
        self.data_s: list[float] = []
        self.compute_s: list[float] = []
        self.steps: list[tuple[int, int, int]] = []  # (rows, padded length, real frames)
        self.frames = 0  # real input frames (feature frames or samples)
        self.padded_frames = 0  # input frames processed, padding included
        self.utterances = 0
        self.epoch_s: list[float] = []
        self.epoch_load: list[float] = []
        self.epoch_main_rss_mb: list[float] = []
        self.epoch_pss_mb: list[float] = []
        self.threads_at_first_step: int | None = None
        self._mark = 0.0
        self._epoch_start = 0.0
        self._cpu_start: tuple[float, float] | None = None
        self._usage_start: Any = None
        self._usage_end: Any = None
        self._jiffies_start = self._jiffies_end = (0, 0)
        self._cpu_end: tuple[float, float] = (0.0, 0.0)
        self._sampler = PssSampler()

    def epoch_start(self) -> None:
        if self._cpu_start is None:
            self._cpu_start = tree_cpu_s()
            self._usage_start = resource.getrusage(resource.RUSAGE_SELF)
            self._jiffies_start = cpu_jiffies()
        self._epoch_start = self._mark = time.perf_counter()
        self._sampler.start()

    def batch(self, real_frames: int, rows: int, length: int) -> None:
        """A batch of ``rows`` utterances padded to ``length`` input frames arrived, with
        ``real_frames`` of them real."""
        now = time.perf_counter()
        self.data_s.append(now - self._mark)
        self._mark = now
        self.steps.append((rows, length, real_frames))
        self.frames += real_frames
        self.padded_frames += rows * length
        self.utterances += rows
        if self.threads_at_first_step is None:
            self.threads_at_first_step = torch.get_num_threads()

    def step_end(self) -> None:
        now = time.perf_counter()
        self.compute_s.append(now - self._mark)
        self._mark = now

    def epoch_end(self) -> None:
        self.epoch_s.append(time.perf_counter() - self._epoch_start)
        self._cpu_end = tree_cpu_s()  # before the workers of a last epoch exit
        self._usage_end = resource.getrusage(resource.RUSAGE_SELF)
        self._jiffies_end = cpu_jiffies()
        self.epoch_load.append(os.getloadavg()[0])
        self.epoch_main_rss_mb.append(main_rss_mb())
        self.epoch_pss_mb.append(tree_memory_mb("pss"))
        print(
            f"  epoch {len(self.epoch_s)}: {self.epoch_s[-1]:.1f} s, {len(self.compute_s)} steps, "
            f"load {self.epoch_load[-1]:.1f}",
            flush=True,
        )

    def result(self, audio_s_per_epoch: float, utterances_per_epoch: int) -> dict[str, Any]:
        wall = sum(self.epoch_s)
        epochs = len(self.epoch_s)
        if self.utterances != epochs * utterances_per_epoch:
            raise RuntimeError(
                f"trained {self.utterances} utterances in {epochs} epochs of "
                f"{utterances_per_epoch}: the systems would not be comparable"
            )
        audio_s = epochs * audio_s_per_epoch
        steps = len(self.compute_s)
        start = self._cpu_start or (0.0, 0.0)
        return {
            "epochs": epochs,
            "steps": steps,
            "utterances_trained": self.utterances,
            "train_wall_s": wall,
            "audio_s_trained": audio_s,
            "audio_s_per_s": audio_s / wall,
            "mean_audio_s_per_step": audio_s / max(steps, 1),
            "padding_fraction": 1 - self.frames / max(self.padded_frames, 1),
            "data_s": sum(self.data_s),
            "compute_s": sum(self.compute_s),
            "data_fraction": sum(self.data_s) / max(sum(self.data_s) + sum(self.compute_s), 1e-9),
            "cpu_main_s": self._cpu_end[0] - start[0],
            "cpu_workers_s": self._cpu_end[1] - start[1],
            # of the main process during the timed epochs: page faults that found no page
            # (fresh or returned memory), and preemptions by other runnable processes
            "minor_page_faults": self._usage_end.ru_minflt - self._usage_start.ru_minflt,
            "involuntary_switches": self._usage_end.ru_nivcsw - self._usage_start.ru_nivcsw,
            "threads_at_first_step": self.threads_at_first_step,
            "epoch_s": self.epoch_s,
            "per_step": [  # rows, padded length, real frames, data wait s, compute s
                [*shape, data, compute]
                for shape, data, compute in zip(
                    self.steps, self.data_s, self.compute_s, strict=False
                )
            ],
            "epoch_load": self.epoch_load,
            "epoch_main_rss_mb": self.epoch_main_rss_mb,
            "epoch_tree_pss_mb": self.epoch_pss_mb,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_tree_pss_mb": self._sampler.peak_mb,
            "runnable_tasks_mean": float(np.mean(self._sampler.runnable or [0])),
            "steal_fraction": (self._jiffies_end[0] - self._jiffies_start[0])
            / max(self._jiffies_end[1] - self._jiffies_start[1], 1),
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


def tree_cpu_s() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process, and by its live children."""
    import psutil

    me = psutil.Process()
    own = sum(me.cpu_times()[:2])
    children = 0.0
    for proc in me.children(recursive=True):
        try:
            children += sum(proc.cpu_times()[:2])
        except psutil.Error:
            pass
    return own, children


def main_rss_mb() -> float:
    """Resident memory of this process alone, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def cpu_jiffies() -> tuple[int, int]:
    """(steal, total) CPU time of the machine so far, from /proc/stat: steal is time a virtual
    machine's CPUs were ready but the host ran something else."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def runnable_tasks() -> int:
    """Threads runnable on the machine now, this process's included (``procs_running``)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("procs_running"):
            return int(line.split()[1])
    return 0


class PssSampler:
    """Peak proportional set size of this process and its children, and the machine's runnable
    threads, sampled every 2 seconds.

    PSS splits each shared page between the processes sharing it, so pages a forked worker
    shares with the main process are not counted twice (RSS would count them twice). Every
    system runs the same sampler. Runnable threads count this run's own (its two compute
    threads, a worker at work, the sampler): well above 3 means other work competed.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.runnable: list[int] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.runnable.append(runnable_tasks())
            self.peak_mb = max(self.peak_mb, tree_memory_mb("pss"))
            time.sleep(self.interval_s)


# ----------------------------------------------------------------------------- shared set-up
@dataclass
class Settings:
    """Model, optimizer and data settings shared by the three systems of one family."""

    family: str
    model_type: str
    config_overrides: dict[str, Any]
    freeze_feature_encoder: bool
    seed: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    gradient_clip_val: float
    level: str
    min_duration_s: float
    max_duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def load_settings(config: Path, family: str, seed: int | None) -> Settings:
    """The family's model and the config's optimizer, schedule and data settings."""
    cfg = yaml.safe_load(config.read_text())
    model, data, trainer = cfg.get("model", {}), cfg.get("data", {}), cfg.get("trainer", {})
    optimizer = {
        "learning_rate": model.get("learning_rate", 1e-4),
        "weight_decay": model.get("weight_decay", 0.005),
        "warmup_ratio": model.get("warmup_ratio", 0.05),
    }
    if family == "parakeet":
        model_type, overrides, freeze = "parakeet_ctc", dict(model["config_overrides"]), False
    else:
        model_type, overrides, freeze = "wav2vec2", dict(WAV2VEC2_OVERRIDES), True
        optimizer |= WAV2VEC2_OPTIMIZER
    return Settings(
        family=family,
        model_type=model_type,
        config_overrides=overrides,
        freeze_feature_encoder=freeze,
        seed=cfg.get("seed_everything", 42) if seed is None else seed,
        scheduler=model.get("scheduler", "linear"),
        gradient_clip_val=trainer.get("gradient_clip_val") or 0.0,
        level=data.get("level", "none"),
        min_duration_s=data.get("min_duration_s", 1.0),
        max_duration_s=data.get("max_duration_s", 18.0),
        extra={"config": str(config)},
        **optimizer,
    )


def manifests(args: argparse.Namespace) -> tuple[Path, Path]:
    """AN4 train and test manifests: ``--manifests`` if prepared, else prepared into the work
    directory (manifests only point at the audio in ``--an4``)."""
    if (args.manifests / "train.jsonl").exists() and (args.manifests / "test.jsonl").exists():
        return args.manifests / "train.jsonl", args.manifests / "test.jsonl"
    from asr_lightning.data.prepare import prepare_an4

    out = args.work_dir / "manifests"
    if not (out / "train.jsonl").exists():
        prepare_an4(args.an4, out)
    return out / "train.jsonl", out / "test.jsonl"


def datamodule(args: argparse.Namespace, settings: Settings, *, max_batch_seconds: float):
    from asr_lightning.training.datamodule import ASRDataModule

    train, test = manifests(args)
    dm = ASRDataModule(
        train=str(train),
        test=str(test),
        model_type=settings.model_type,
        model_config_overrides=settings.config_overrides,
        max_batch_seconds=max_batch_seconds,
        eval_max_batch_seconds=120.0,
        num_workers=args.workers,
        cache_audio=not args.no_cache,
        level=settings.level,
        min_duration_s=settings.min_duration_s,
        max_duration_s=settings.max_duration_s,
        duration_cache=str(args.work_dir / "durations.sqlite"),
        seed=settings.seed,
    )
    dm.setup("fit")
    dm.setup("test")
    return dm


def build_module(dm, settings: Settings):
    """The model of every system: ``CTCModule.configure_model`` under the run's seed."""
    import lightning

    from asr_lightning.training.module import CTCModule

    lightning.seed_everything(settings.seed, workers=True, verbose=False)
    module = CTCModule(
        model_name_or_path=None,
        model_type=settings.model_type,
        config_overrides=settings.config_overrides,
        vocab=dm.vocab,
        input_level=settings.level,
        freeze_feature_encoder=settings.freeze_feature_encoder,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_ratio=settings.warmup_ratio,
        scheduler=settings.scheduler,
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
    """WER/CER on AN4 test: the same batches and greedy decoding for every system.

    The model is padding-guarded first (:func:`asr_lightning.model.padding.guard_padding`,
    idempotent), so every system's model transcribes each clip as it would alone.
    """
    import jiwer

    from asr_lightning.decoding.decoder import CTCDecoder
    from asr_lightning.model.ctc import model_inputs, output_lengths
    from asr_lightning.model.families import blank_token_id
    from asr_lightning.model.features import samples_per_frame
    from asr_lightning.model.padding import guard_padding

    guard_padding(model)
    model.eval()
    decoder = CTCDecoder(
        tokenizer, blank_token_id(model.config), samples_per_frame(model, dm.feature_extractor)
    )
    refs, hyps = [], []
    with torch.inference_mode():
        for batch in dm.test_dataloader()[0]:
            if not batch["ids"]:
                continue
            inputs = model_inputs(model, batch[model.main_input_name], batch["attention_mask"])
            logits = model(**inputs).logits  # (B, T, V)
            lengths = output_lengths(model, batch).clamp(max=logits.shape[1])
            hyps += decoder.texts(logits, lengths)  # as every runtime decodes
            refs += batch["texts"]
    return {
        "wer": jiwer.wer(refs, hyps),
        "cer": jiwer.cer(refs, hyps),
        "test_utterances": len(refs),
    }


# ----------------------------------------------------------------------------- the recipe
class DataCollatorCTCWithPadding:
    """The recipe's collator (``run_speech_recognition_ctc.py``), for a feature extractor and a
    tokenizer instead of the processor holding both: ``pad`` the inputs and the labels, labels'
    padding to -100, the attention mask (where the feature extractor returns one) to long."""

    def __init__(self, feature_extractor: Any, tokenizer: Any, padding: bool | str = True):
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


class MeasuredCollator(DataCollatorCTCWithPadding):
    """The recipe's collator, which also counts the batch's real input frames (one ``len`` per
    utterance) for the padding measurement; a wav2vec2-base-style model gets no attention mask
    from its feature extractor, so the mask cannot tell."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        real = sum(len(f[self.input_name]) for f in features)
        batch = super().__call__(features)
        batch[REAL_FRAMES_KEY] = real
        return batch


def recipe_dataset(dm, feature_extractor, tokenizer):
    """The recipe's ``vectorized_datasets["train"]``: features, ``input_length`` and labels of
    every utterance computed once with ``datasets.map`` (its ``prepare_dataset``)."""
    import datasets

    from asr_lightning.audio.augment import normalize_level
    from asr_lightning.audio.decode import load_audio

    items = dm.datasets["train"]["train"].items
    raw = datasets.Dataset.from_dict(
        {"path": [i.audio for i in items], "target_text": [i.text for i in items]}
    )
    level = dm.level
    input_name = feature_extractor.model_input_names[0]

    def prepare_dataset(batch):
        audio = normalize_level(load_audio(batch["path"]), level)  # the data's level, as ours
        inputs = feature_extractor(audio, sampling_rate=SAMPLE_RATE)
        batch[input_name] = np.asarray(getattr(inputs, input_name)[0])  # (T, F) or (T,)
        batch["input_length"] = len(audio)  # "take length of raw audio waveform"
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


def recipe_model(module) -> Any:
    """The recipe's model: a plain ``AutoModelForCTC`` with the module's weights.

    ``CTCModule`` guards its model against padding (hooks, a masked group norm); the recipe
    trains the unmodified Hugging Face model, so it gets that, with the same configuration and
    the same initial weights, and the recipe's ``model.freeze_feature_encoder()``.
    """
    from transformers import AutoModelForCTC

    model = AutoModelForCTC.from_config(module.model.config)
    model.load_state_dict(module.model.state_dict())
    if hasattr(model, "freeze_feature_encoder") and module.hparams.freeze_feature_encoder:
        model.freeze_feature_encoder()
    model.train()
    return model


def training_arguments(args: argparse.Namespace, settings: Settings, grouped: bool):
    """The recipe's ``TrainingArguments`` for the fastest training it offers on this machine.

    Each setting against ``run_speech_recognition_ctc.py``, its README commands and the
    ``TrainingArguments`` defaults of the installed transformers (5.x):
    """
    from transformers import TrainingArguments

    workers = args.recipe_workers
    return TrainingArguments(
        output_dir=str(args.work_dir / "recipe"),
        # the model, optimizer and schedule shared by the three systems (the config's)
        per_device_train_batch_size=args.batch_size,  # the README's 16
        gradient_accumulation_steps=1,  # the README's 2 only doubles the batch: ours steps once
        num_train_epochs=args.epochs,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,  # a float < 1 is a ratio in transformers 5
        lr_scheduler_type=settings.scheduler,
        max_grad_norm=settings.gradient_clip_val,
        seed=settings.seed,
        # the optimizer: the default of transformers 5 with torch >= 2.8, the fused AdamW
        # kernel (one kernel for all parameters; ours uses torch's fused AdamW too)
        optim="adamw_torch_fused",
        # length grouping: the recipe's README passes --group_by_length with
        # --length_column_name input_length (its prepare_dataset stores input_length)
        train_sampling_strategy="group_by_length" if grouped else "random",
        length_column_name="input_length",
        # the default: columns model.forward does not take (input_length) are dropped before the
        # collator; transformers 5 drops them before the length-grouped sampler is built too, so
        # LengthGroupedSampler measures len(input_features) per utterance itself, once, before
        # the first epoch (outside the timed epochs; the same order as input_length)
        remove_unused_columns=True,
        # DataLoader: the recipe's features are precomputed, so its workers only read them from
        # Arrow (as Python lists) and pad. The recipe's default is 0: that padding then runs in
        # the main process, on the step. 2 workers (--recipe-workers, the default here, as many
        # as ours has) take it off the step; --recipe-workers 0 measures the recipe's default.
        # They stay alive across epochs rather than being forked again at every epoch, and
        # prefetch the default 2 batches each.
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        # nothing to pin on a CPU-only run (pinning is for host-to-GPU copies)
        dataloader_pin_memory=False,
        # precision: fp32 on a CPU; --precision bf16 gives every system bf16 autocast (the
        # README's --fp16 is for GPUs; a CPU runs bf16, natively only with AVX512-BF16/AMX)
        use_cpu=True,
        bf16=args.precision == "bf16",
        # the README's --gradient_checkpointing saves GPU memory at the cost of recomputing
        # activations: left at its default, off, as for ours; torch_compile: off, the default
        torch_compile=False,
        # nothing during the timed epochs but training: the recipe evaluates every 100 and saves
        # every 400 steps; here, as for ours, neither (WER is measured after training, the same
        # way for every system). Logging: the default every 500 steps; no tracker, no progress bar
        eval_strategy="no",
        save_strategy="no",
        logging_steps=500,
        report_to="none",
        disable_tqdm=True,
    )


def run_recipe(args: argparse.Namespace, settings: Settings, grouped: bool) -> dict[str, Any]:
    from transformers import Trainer, TrainerCallback

    setup_start = time.perf_counter()
    dm = datamodule(args, settings, max_batch_seconds=200.0)
    module = build_module(dm, settings)
    model = recipe_model(module)
    feature_extractor, tokenizer = module.feature_extractor, module.tokenizer
    del module
    train = recipe_dataset(dm, feature_extractor, tokenizer)
    audio_s = sum(train["input_length"]) / SAMPLE_RATE
    meter = Meter()
    input_name = feature_extractor.model_input_names[0]

    found: dict[str, Any] = {}

    class Timing(TrainerCallback):
        def on_train_begin(self, *_a, train_dataloader=None, **_k):
            sampler = train_sampler(train_dataloader)
            found["sampler"] = type(sampler).__name__
            found["sampler_lengths"] = list(getattr(sampler, "lengths", []) or [])

        def on_epoch_begin(self, *_a, **_k):
            meter.epoch_start()

        def on_step_end(self, *_a, **_k):
            meter.step_end()

        def on_epoch_end(self, *_a, **_k):
            meter.epoch_end()

    class MeasuredTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            real = inputs.pop(REAL_FRAMES_KEY)
            shape = inputs[input_name].shape  # (B, T, F) features or (B, T) samples
            meter.batch(real, shape[0], shape[1])
            return super().training_step(model, inputs, num_items_in_batch)

    trainer = MeasuredTrainer(
        model=model,
        args=training_arguments(args, settings, grouped),
        train_dataset=train,
        data_collator=MeasuredCollator(feature_extractor, tokenizer),
        processing_class=feature_extractor,
        callbacks=[Timing()],
    )
    setup_s = time.perf_counter() - setup_start
    trainer.train()
    return {
        "setup_s": setup_s,
        "effective_batch": f"{args.batch_size} utterances, "
        + ("length-grouped" if grouped else "random"),
        "sampler": found.get("sampler"),
        "sampler_lengths_follow_input_length": sampler_agrees(found, train),
        "workers": args.recipe_workers,
        "optimizer": type(trainer.optimizer.optimizer).__name__
        + (" fused" if trainer.optimizer.optimizer.defaults.get("fused") else ""),
        **meter.result(audio_s, len(train)),
        **evaluate(model, tokenizer, dm),
    }


def train_sampler(loader: Any) -> Any:
    """The index sampler inside the Trainer's (accelerate-prepared) training DataLoader."""
    batches = getattr(loader, "batch_sampler", None)
    while batches is not None and not hasattr(batches, "sampler"):
        batches = getattr(batches, "batch_sampler", None)
    return getattr(batches, "sampler", None)


def sampler_agrees(found: dict[str, Any], train) -> bool | None:
    """Whether the length-grouped sampler's lengths order the utterances as ``input_length``
    does (``None`` for a sampler without lengths)."""
    lengths = found.get("sampler_lengths")
    if not lengths:
        return None
    rank = np.argsort(np.asarray(lengths), kind="stable")
    return bool(np.all(np.diff(np.asarray(train["input_length"])[rank]) >= -(SAMPLE_RATE // 50)))


# ----------------------------------------------------------------------------- asr-lightning
def run_ours(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    import lightning

    from asr_lightning.training.memory import ReleaseMemory

    setup_start = time.perf_counter()
    probe = datamodule(args, settings, max_batch_seconds=200.0)
    durations = probe.datasets["train"]["train"].durations
    recipe_steps = math.ceil(len(durations) / args.batch_size)
    cap = cap_for_steps(durations, recipe_steps, settings.seed)
    dm = datamodule(args, settings, max_batch_seconds=cap)
    module = build_module(dm, settings)
    meter = Meter()

    class Timing(lightning.Callback):
        def on_train_epoch_start(self, *_a):
            meter.epoch_start()

        def on_train_batch_start(self, _trainer, _module, batch, _index):
            mask = batch["attention_mask"]
            meter.batch(int(mask.sum()), *mask.shape)

        def on_train_batch_end(self, *_a):
            meter.step_end()

        def on_train_epoch_end(self, *_a):
            meter.epoch_end()

    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        gradient_clip_val=settings.gradient_clip_val or None,
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
    setup_s = time.perf_counter() - setup_start
    trainer.fit(module, datamodule=dm)
    optimizer = trainer.optimizers[0]
    return {
        "setup_s": setup_s,
        "effective_batch": f"max_batch_seconds={cap} (bucketed, {recipe_steps} batches/epoch)",
        "sampler": "DurationBucketSampler",
        "workers": args.workers,
        "cache_audio": not args.no_cache,
        "optimizer": type(optimizer).__name__
        + (" fused" if optimizer.defaults.get("fused") else ""),
        **meter.result(sum(durations), len(durations)),
        **evaluate(module.model, module.tokenizer, dm),
    }


# ----------------------------------------------------------------------------- driver
def child(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, args.family, args.seed)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    if args.system == "ours":
        run = run_ours(args, settings)
    else:
        run = run_recipe(args, settings, grouped=args.system == "recipe_grouped")
    result = {
        "family": args.family,
        "system": args.system,
        "seed": settings.seed,
        "settings": vars(settings),
        "precision": args.precision,
        "torch_threads": torch.get_num_threads(),
        **run,
    }
    args.result.write_text(json.dumps(result, indent=2))


def spread(values: Sequence[float], fmt: str) -> str:
    """``mean (min - max)`` of ``values``, or the one value."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(np.mean(values))} ({fmt.format(min(values))} - {fmt.format(max(values))})"


ROWS: tuple[tuple[str, str, str], ...] = (
    ("audio s trained / wall s", "audio_s_per_s", "{:.1f}"),
    ("train wall s", "train_wall_s", "{:.1f}"),
    ("optimizer steps", "steps", "{:.0f}"),
    ("mean real audio s / step", "mean_audio_s_per_step", "{:.1f}"),
    ("padding share of input frames", "padding_fraction", "{:.1%}"),
    ("data wait share of step time", "data_fraction", "{:.1%}"),
    ("data wait s", "data_s", "{:.1f}"),
    ("compute s", "compute_s", "{:.1f}"),
    ("CPU s, main process", "cpu_main_s", "{:.1f}"),
    ("CPU s, DataLoader workers", "cpu_workers_s", "{:.1f}"),
    ("main process minor page faults, thousands", "minor_page_faults_k", "{:.0f}"),
    ("main process involuntary context switches", "involuntary_switches", "{:.0f}"),
    ("set-up s (not in train wall)", "setup_s", "{:.1f}"),
    ("peak RSS main MB", "peak_rss_mb", "{:.0f}"),
    ("peak PSS main+workers MB", "peak_tree_pss_mb", "{:.0f}"),
    ("load average (1 min) at epoch ends", "mean_load", "{:.1f}"),
    ("runnable threads on the machine, mean", "runnable_tasks_mean", "{:.1f}"),
    ("CPU time stolen by the host (VM steal)", "steal_fraction", "{:.1%}"),
    ("test WER", "wer", "{:.3f}"),
    ("test CER", "cer", "{:.3f}"),
)


def derived(run: dict[str, Any], key: str) -> float:
    """A measurement of a run, or one derived from its measurements."""
    if key == "mean_load":
        return float(np.mean(run["epoch_load"]))
    if key == "minor_page_faults_k":
        return run["minor_page_faults"] / 1000
    return float(run[key])


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """One row per measurement, one column per system: mean (min - max) over the seeds."""
    names = [name for name in SYSTEMS if runs.get(name)]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in ROWS:
        cells = []
        for name in names:
            values = [derived(r, key) for r in runs[name]]
            cells.append(spread(values, fmt))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| runs kept / contended (runs made) | "
        + " | ".join(
            f"{len(runs[name])} / {sum(bool(r.get('contended')) for r in runs[name])} "
            f"({sum(r.get('attempt', 1) for r in runs[name])})"
            for name in names
        )
        + " |"
    )
    first = {name: runs[name][0] for name in names}
    lines.append(
        "| settings | "
        + " | ".join(
            f"{r['effective_batch']}; {r['workers']} workers; {r['threads_at_first_step']} "
            f"threads; {r['optimizer']}"
            for r in first.values()
        )
        + " |"
    )
    return "\n".join(lines)


def ratios(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Ours over each recipe variant, per seed (runs of one seed pair up), mean and spread."""
    lines = []
    ours = {r["seed"]: r for r in runs.get("ours", [])}
    for base in ("recipe", "recipe_grouped"):
        pairs = [(ours[r["seed"]], r) for r in runs.get(base, []) if r["seed"] in ours]
        if not pairs:
            continue
        values = [o["audio_s_per_s"] / b["audio_s_per_s"] for o, b in pairs]
        per_seed = ", ".join(
            f"seed {b['seed']}: {v:.2f}x (WER {o['wer']:.3f} vs {b['wer']:.3f})"
            for (o, b), v in zip(pairs, values, strict=True)
        )
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        goal = GOALS[base]
        verdict = "met" if np.mean(values) >= goal else "NOT met"
        wer_gap = np.mean([o["wer"] - b["wer"] for o, b in pairs])
        lines.append(
            f"ours / {base}: {np.mean(values):.2f}x mean, {min(values):.2f} - {max(values):.2f}, "
            f"sd {std:.2f} over {len(values)} seed(s); goal {goal}x: {verdict}; "
            f"WER ours - {base}: {wer_gap:+.3f} mean\n    {per_seed}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "an4.yaml")
    parser.add_argument("--manifests", type=Path, default=REPO / "manifests" / "an4")
    parser.add_argument("--an4", type=Path, default=REPO.parent / "shared" / "data" / "an4")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "train_speed")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="recipe utterances/batch")
    parser.add_argument("--workers", type=int, default=2, help="asr-lightning DataLoader workers")
    parser.add_argument(
        "--recipe-workers", type=int, default=2, help="the recipe's dataloader_num_workers"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--precision", choices=("32", "bf16"), default="32", help="for every system"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="seconds to wait, before each run, for other work on the machine to stop",
    )
    parser.add_argument(
        "--max-runnable",
        type=float,
        default=3.5,
        help="a run with more runnable threads on the machine on average was contended",
    )
    parser.add_argument("--retries", type=int, default=2, help="reruns of a contended run")
    parser.add_argument("--no-cache", action="store_true", help="ours without cache_audio")
    parser.add_argument(
        "--no-release-memory", action="store_true", help="ours without the ReleaseMemory callback"
    )
    parser.add_argument("--family", choices=FAMILIES, help=argparse.SUPPRESS)
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.config.exists():  # the AN4 config is optional: the quickstart model then
        args.config = REPO / "configs" / "quickstart.yaml"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.system:
        return child(args)

    passed = list(argv if argv is not None else sys.argv[1:])
    print(f"load average before: {os.getloadavg()}, cpu: {cpu_model()}", flush=True)
    started = time.time()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {f: {} for f in args.families}
    for index, seed in enumerate(args.seeds):
        # each seed starts with another system, so that no system always runs first
        shift = index % len(args.systems)
        order = [*args.systems[shift:], *args.systems[:shift]]
        for family in args.families:
            for system in order:
                out = args.work_dir / f"{family}.{system}.seed{seed}.json"
                cmd = [
                    sys.executable, __file__, *passed,
                    "--family", family, "--system", system, "--seed", str(seed),
                ]  # fmt: skip
                runs[family].setdefault(system, []).append(measure(cmd, out, args))
    print(
        f"\nload average after: {os.getloadavg()}; {(time.time() - started) / 60:.1f} min; "
        f"{args.epochs} epochs, seeds {args.seeds}, precision {args.precision}, "
        f"config {args.config.name}"
    )
    for family, family_runs in runs.items():
        print(f"\n### {family}: mean (min - max) over seeds {args.seeds}\n")
        print(table(family_runs))
        print()
        for line in ratios(family_runs):
            print(line)
    summary = args.work_dir / "summary.json"
    summary.write_text(json.dumps(runs, indent=1))
    print(f"\nevery run: {summary}")


def measure(cmd: list[str], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child after the machine is quiet; run it again (up to ``--retries`` times) when
    other work competed with it (more than ``--max-runnable`` runnable threads on average).

    Returns the first uncontended result, else the least contended one, marked ``contended``.
    """
    attempts = []
    for attempt in range(args.retries + 1):
        waited = wait_for_quiet(args.quiet_wait)
        print(f"== {' '.join(cmd[cmd.index('--family') :])} (waited {waited:.0f} s)", flush=True)
        subprocess.run([*cmd, "--result", str(out)], check=True)
        result = json.loads(out.read_text())
        result["attempt"] = attempt + 1
        attempts.append(result)
        if result["runnable_tasks_mean"] <= args.max_runnable:
            result["contended"] = False
            return result
        print(
            f"   contended: {result['runnable_tasks_mean']:.1f} runnable threads on average "
            f"(> {args.max_runnable}), {result['audio_s_per_s']:.1f} audio s/s",
            flush=True,
        )
    best = min(attempts, key=lambda r: r["runnable_tasks_mean"])
    best["contended"] = True
    return best


def wait_for_quiet(limit_s: float, busy: int = 1) -> float:
    """Wait (up to ``limit_s``) until no other thread runs on the machine; the seconds waited.

    Quiet means at most ``busy`` runnable threads (this one) in each of 5 samples over 2 s: on
    a 2-core machine one busy thread of other work slows a 2-thread training run several-fold.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        samples = []
        for _ in range(5):
            samples.append(runnable_tasks())
            time.sleep(0.4)
        if max(samples) <= busy:
            break
    return time.perf_counter() - start


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, and its core count."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"unknown x {os.cpu_count()}"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    np.seterr(all="ignore")
    main()
