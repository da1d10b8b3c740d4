"""Generate the quickstart corpus: short spoken commands synthesized with espeak-ng.

The corpus ships inside the repository (``data/quickstart``) so that ``asr-lightning fit
--config configs/quickstart.yaml`` trains without a download. It is an AN4-like task: 1-5 words
from a closed 30-word vocabulary (digits, spelled letters, a few commands), spoken by espeak-ng
voices at varied speed and pitch, with a little noise. The splits are disjoint BY VOICE: the
validation and test voices (voice variant, e.g. ``+f3``) are never heard in training.

Generation is deterministic: the same seed gives the same texts, voices, speeds, pitches, noise
and file names; with the same ffmpeg/libopus build the audio files are byte-identical too.

Usage::

    python scripts/make_quickstart_data.py --out data/quickstart

Needs ``espeak-ng`` and ``ffmpeg`` (with libopus) on PATH, and numpy, soundfile, soxr.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DEFAULT_SEED = 1234
SPLITS = ("train", "validation", "test")

DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
# Letters whose names espeak-ng reads as letters in any position (not "A", read as the article)
# and that do not all rhyme on "ee" (B D E G P T V Z would be a much harder task).
LETTERS = ("C", "F", "H", "J", "K", "M", "Q", "R", "X", "Y")
COMMANDS = ("YES", "NO", "STOP", "START", "GO", "BACK", "HELP", "REPEAT", "ENTER", "ERASE")
SHORT_COMMANDS = tuple(c for c in COMMANDS if c not in ("ENTER", "ERASE"))

# A voice is an espeak-ng accent plus a voice variant ("en-us+m3"). Variants never repeat across
# splits, so the validation and test speakers are unseen; accents are shared (they are dialects).
VOICES: dict[str, tuple[str, ...]] = {
    "train": (
        "en-us+m3",
        "en-gb+f2",
        "en-gb-scotland+m2",
        "en-029+f1",
        "en-gb-x-rp+m4",
        "en-us-nyc+f4",
        "en-gb-x-gbclan+m6",
        "en-gb-x-gbcwmd+Annie",
        "en-us+david",
        "en-gb+robert",
        "en-029+linda",
        "en-us-nyc+m7",
    ),
    "validation": ("en-gb-x-rp+f3", "en-us+paul"),
    "test": ("en-us+f5", "en-gb-scotland+Michael"),
}
UTTERANCES: dict[str, int] = {"train": 1500, "validation": 150, "test": 150}

SPEED_WPM = (120, 200)  # espeak-ng -s
PITCH = (30, 70)  # espeak-ng -p, 0-99 around the variant's own pitch
WORD_GAP = (0, 3)  # espeak-ng -g, extra pause between words in units of 10 ms
TRIM_BELOW_PEAK_DB = 40.0  # frames this far below the loudest frame count as silence
TRIM_FRAME_S = 0.01
PAD_S = (0.15, 0.35)  # random silence kept/added before and after the speech
RMS_DBFS = (-26.0, -18.0)  # speech level after normalization...
MAX_PEAK = 0.9  # ...unless that would push the peak past this (about -1 dBFS)
SNR_DB = (25.0, 45.0)  # white noise under the whole clip
OPUS_BITRATE_KBPS = 20  # ~2.6 KB/s; Vorbis q0 at 16 kHz: ~4.5 KB/s and more spectral error
SUBPROCESS_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Plan:
    """Everything needed to render one utterance; drawn up front so rendering order is free."""

    id: str  # file stem and manifest id, e.g. "train-00042"
    split: str
    voice: str  # espeak-ng voice, "accent+variant"; the manifest's speaker
    words: tuple[str, ...]  # upper-case transcript words
    speed_wpm: int
    pitch: int
    word_gap: int
    pad_s: tuple[float, float]  # (before, after)
    rms_dbfs: float
    snr_db: float
    noise_seed: int


def draw_words(rng: random.Random) -> tuple[str, ...]:
    """Draw one AN4-like command of 1-5 words ("ERASE C Q Q F SEVEN", "GO BACK", "YES")."""
    kind = rng.random()
    symbols = DIGITS + LETTERS
    if kind < 0.15:
        return (rng.choice(SHORT_COMMANDS),)
    if kind < 0.25:
        return (rng.choice(SHORT_COMMANDS), rng.choice(SHORT_COMMANDS))
    if kind < 0.45:
        return ("ENTER", *rng.choices(DIGITS, k=rng.randint(1, 4)))
    if kind < 0.65:
        return ("ERASE", *rng.choices(symbols, k=rng.randint(1, 4)))
    if kind < 0.75:
        return (rng.choice(SHORT_COMMANDS), *rng.choices(symbols, k=rng.randint(1, 3)))
    return tuple(rng.choices(symbols, k=rng.randint(1, 5)))


def draw_plans(seed: int) -> list[Plan]:
    """Draw every utterance of every split, deterministically from ``seed``."""
    rng = random.Random(seed)
    plans = []
    for split in SPLITS:
        voices = VOICES[split]
        for index in range(UTTERANCES[split]):
            plans.append(
                Plan(
                    id=f"{split}-{index:05d}",
                    split=split,
                    voice=voices[index % len(voices)],
                    words=draw_words(rng),
                    speed_wpm=rng.randint(*SPEED_WPM),
                    pitch=rng.randint(*PITCH),
                    word_gap=rng.randint(*WORD_GAP),
                    pad_s=(round(rng.uniform(*PAD_S), 3), round(rng.uniform(*PAD_S), 3)),
                    rms_dbfs=round(rng.uniform(*RMS_DBFS), 2),
                    snr_db=round(rng.uniform(*SNR_DB), 2),
                    noise_seed=rng.getrandbits(32),
                )
            )
    return plans


def synthesize(plan: Plan) -> np.ndarray:
    """Run espeak-ng and return its speech as float32 mono at 16 kHz."""
    # Lower case: espeak-ng spells some all-capital words; single letters are read as letters.
    text = " ".join(plan.words).lower()
    command = ["espeak-ng", "-v", plan.voice, "-s", str(plan.speed_wpm), "-p", str(plan.pitch)]
    command += ["-g", str(plan.word_gap), "--stdout", text]
    result = subprocess.run(command, capture_output=True, check=True, timeout=SUBPROCESS_TIMEOUT_S)
    samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    return soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)


def trim_silence(samples: np.ndarray) -> np.ndarray:
    """Cut leading and trailing frames more than ``TRIM_BELOW_PEAK_DB`` below the loudest one."""
    frame = int(TRIM_FRAME_S * SAMPLE_RATE)
    n_frames = len(samples) // frame
    energy = (samples[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1)  # (F,)
    loud = np.flatnonzero(10 * np.log10(energy / energy.max() + 1e-12) > -TRIM_BELOW_PEAK_DB)
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


def render(plan: Plan) -> np.ndarray:
    """Synthesize, trim, pad, level and add noise: the utterance as float32 16 kHz mono."""
    speech = trim_silence(synthesize(plan))
    gain = 10 ** (plan.rms_dbfs / 20) / np.sqrt(np.mean(speech**2))
    speech *= min(gain, MAX_PEAK / np.abs(speech).max())
    before, after = (int(pad * SAMPLE_RATE) for pad in plan.pad_s)
    clip = np.concatenate([np.zeros(before, np.float32), speech, np.zeros(after, np.float32)])
    noise_rms = 10 ** ((plan.rms_dbfs - plan.snr_db) / 20)
    clip += np.random.default_rng(plan.noise_seed).normal(0.0, noise_rms, len(clip))
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def encode_opus(samples: np.ndarray, path: Path) -> None:
    """Write ``samples`` (16 kHz mono float32) as Ogg Opus with ffmpeg in bit-exact mode.

    ffmpeg rather than soundfile: libsndfile seeds the Ogg stream serial number from the clock,
    so its files differ on every run; ffmpeg's ``+bitexact`` makes them reproducible.
    """
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(SAMPLE_RATE)]
    command += ["-ac", "1", "-i", "pipe:0", "-c:a", "libopus", "-b:a", f"{OPUS_BITRATE_KBPS}k"]
    command += ["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1", str(path)]
    subprocess.run(
        command,
        input=samples.astype("<f4").tobytes(),
        capture_output=True,
        check=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def make_utterance(plan: Plan, out: Path) -> dict[str, object]:
    """Render one plan into ``out/audio`` and return its manifest row."""
    samples = render(plan)
    relative = f"audio/{plan.id}.opus"
    encode_opus(samples, out / relative)
    return {
        "audio_filepath": relative,
        "text": " ".join(plan.words),
        "duration": round(len(samples) / SAMPLE_RATE, 3),
        "speaker": plan.voice,
        "id": plan.id,
    }


def tool_version(command: Sequence[str]) -> str:
    """First line of a tool's version output, for the README's provenance note."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    first_line = (result.stdout.strip().splitlines() or ["unknown"])[0]
    return re.split(r"\s+(?:Data at|Copyright)", first_line)[0]


def summarize(rows: dict[str, list[dict]], out: Path) -> dict[str, dict[str, float]]:
    """Per-split counts, durations (s) and audio bytes."""
    stats = {}
    for split, split_rows in rows.items():
        durations = [float(row["duration"]) for row in split_rows]
        stats[split] = {
            "utterances": len(split_rows),
            "seconds": sum(durations),
            "min_s": min(durations),
            "max_s": max(durations),
            "bytes": sum((out / row["audio_filepath"]).stat().st_size for row in split_rows),
        }
    return stats


README_TEMPLATE = """\
# Quickstart corpus: spoken commands synthesized with espeak-ng

Generated by `scripts/make_quickstart_data.py`; do not edit by hand. Regenerate with

    python scripts/make_quickstart_data.py --out data/quickstart --seed {seed}

An AN4-like task that a small CTC model learns in minutes on a CPU: 1-5 words from a closed
vocabulary of {n_words} words (digits, spelled letters and a few commands), e.g.
`ERASE C Q Q F SEVEN`, `ENTER SEVEN NINE`, `GO BACK`, `YES`. Transcripts are upper case.

Vocabulary:
{vocabulary}

## Splits (disjoint by voice)

A voice is an espeak-ng accent plus a voice variant (`en-us+m3`). No variant is used in two
splits, so validation and test speakers are never heard in training (accents, which are
dialects rather than speakers, are shared).

| split | utterances | minutes | duration per clip (s) | MB | voices |
|---|---|---|---|---|---|
{split_rows}
| total | {total_utterances} | {total_minutes:.1f} | | {total_mb:.2f} | {total_voices} |

## How it was made

- Text: drawn from a seeded grammar (single commands, command pairs, `ENTER` + 1-4 digits,
  `ERASE` + 1-4 letters/digits, a command + 1-3 letters/digits, or 1-5 letters/digits).
- Speech: `espeak-ng -v VOICE -s SPEED -p PITCH -g GAP --stdout TEXT`, drawn per clip:
  speed {speed[0]}-{speed[1]} words per minute, pitch {pitch[0]}-{pitch[1]},
  extra word gap {gap[0]}-{gap[1]} x 10 ms.
- Post-processing: resampled 22.05 -> 16 kHz mono with soxr; leading and trailing silence
  (frames {trim:.0f} dB below the loudest) cut; {pad[0]}-{pad[1]} s of silence added at each end;
  speech level set to {rms[0]:.0f} to {rms[1]:.0f} dBFS RMS (peak at most {peak});
  white noise added at {snr[0]:.0f}-{snr[1]:.0f} dB SNR.
- Format: Ogg Opus at {bitrate} kbit/s, 16 kHz mono (`.opus`), encoded by ffmpeg's libopus in
  bit-exact mode. Opus rather than Ogg Vorbis: at 16 kHz libvorbis needs about 4.5 KB/s even at
  its lowest quality and distorts the log-mel spectrum more than Opus at {bitrate} kbit/s (about
  2.6 KB/s), so Opus fits almost twice as much speech in the size budget. soundfile
  (libsndfile >= 1.0.29), ffmpeg, torchaudio and librosa all decode it.
- Determinism: seed {seed} fixes texts, voices, speeds, pitches, gaps, padding, levels, noise and
  file names; with the same espeak-ng and ffmpeg builds the audio is byte-identical.
- Tools: {espeak}; {ffmpeg}.

## Files

`train.jsonl`, `validation.jsonl`, `test.jsonl` are NeMo-style manifests, one JSON object a line:
`audio_filepath` (relative to this folder), `text`, `duration` (seconds), `speaker` (the
espeak-ng voice) and `id`. The audio is in `audio/`.

## Licence

The audio is machine output of espeak-ng (GPL-3.0-or-later). The GPL covers the program, not
speech it outputs from text that is not part of it. The texts, manifests and this note were
generated by this repository's script and share the repository's licence (Apache-2.0).
"""


def write_readme(out: Path, rows: dict[str, list[dict]], seed: int) -> None:
    """Write ``out/README.md``: how the corpus was made and what is in it."""
    stats = summarize(rows, out)
    lines = []
    for split in SPLITS:
        s = stats[split]
        lines.append(
            f"| {split} | {s['utterances']} | {s['seconds'] / 60:.1f} "
            f"| {s['min_s']:.2f}-{s['max_s']:.2f} | {s['bytes'] / 1e6:.2f} "
            f"| {', '.join(f'`{v}`' for v in VOICES[split])} |"
        )
    text = README_TEMPLATE.format(
        seed=seed,
        n_words=len(DIGITS + LETTERS + COMMANDS),
        vocabulary="\n".join(
            f"- {name}: {' '.join(words)}"
            for name, words in (("digits", DIGITS), ("letters", LETTERS), ("commands", COMMANDS))
        ),
        split_rows="\n".join(lines),
        total_utterances=sum(s["utterances"] for s in stats.values()),
        total_minutes=sum(s["seconds"] for s in stats.values()) / 60,
        total_mb=sum(s["bytes"] for s in stats.values()) / 1e6,
        total_voices=sum(len(v) for v in VOICES.values()),
        speed=SPEED_WPM,
        pitch=PITCH,
        gap=WORD_GAP,
        trim=TRIM_BELOW_PEAK_DB,
        pad=PAD_S,
        rms=RMS_DBFS,
        peak=MAX_PEAK,
        snr=SNR_DB,
        bitrate=OPUS_BITRATE_KBPS,
        espeak=tool_version(["espeak-ng", "--version"]),
        ffmpeg=tool_version(["ffmpeg", "-version"]),
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def clear_outputs(out: Path) -> None:
    """Remove a previous corpus from ``out`` (only the files this script writes)."""
    shutil.rmtree(out / "audio", ignore_errors=True)
    for name in (*(f"{split}.jsonl" for split in SPLITS), "README.md"):
        (out / name).unlink(missing_ok=True)


def make_corpus(out: Path, seed: int = DEFAULT_SEED, jobs: int = 2) -> dict[str, list[dict]]:
    """Generate the whole corpus into ``out`` and return the manifest rows per split."""
    clear_outputs(out)
    (out / "audio").mkdir(parents=True)
    plans = draw_plans(seed)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        made = list(pool.map(lambda plan: make_utterance(plan, out), plans))
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for plan, row in zip(plans, made, strict=True):
        rows[plan.split].append(row)
    for split, split_rows in rows.items():
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in split_rows)
    write_readme(out, rows, seed)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/quickstart"), help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel espeak/ffmpeg processes"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found on PATH: install it (e.g. apt-get install {tool})")
    rows = make_corpus(args.out, args.seed, args.jobs)
    words = Counter(
        word for split_rows in rows.values() for r in split_rows for word in r["text"].split()
    )
    for split, split_rows in rows.items():
        minutes = sum(float(r["duration"]) for r in split_rows) / 60
        logger.info("%s: %d utterances, %.1f min", split, len(split_rows), minutes)
    logger.info("word counts: %s", dict(sorted(words.items())))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
