"""Manifests for the two small real corpora used in tests, examples and benchmarks.

Each ``prepare_*`` reads a corpus in place and writes NeMo-style JSON-lines manifests
(``audio_filepath`` absolute, ``text``, ``duration`` from the file headers, ``speaker``, ``id``)
with the corpus's own train/test split, sorted by id so that the files are reproducible.

- CMU AN4 (``an4_sphere`` layout): ``etc/an4_{train,test}.{transcription,fileids}`` and
  ``wav/<fileid>.sph``; the ``<s> </s>`` markers are stripped; 948 train / 130 test utterances
  from disjoint speakers.
- Free Spoken Digit Dataset: ``recordings/{digit}_{speaker}_{take}.wav``; the transcript is the
  digit as an upper-case English word (``7`` -> ``SEVEN``), the vocabulary of AN4's digits;
  takes 0-4 are the test split (300 files), the rest train (2700).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from asr_lightning.data.durations import measure_durations
from asr_lightning.data.sources import Utterance, write_manifest
from asr_lightning.errors import AudioDecodeError, DataSourceError

log = logging.getLogger(__name__)

AN4_SPLITS = ("train", "test")
AN4_AUDIO_SUFFIX = ".sph"
#: ``<s> ERASE C Q Q F SEVEN </s> (an251-fash-b)``; test lines have no ``<s> </s>``.
AN4_LINE = re.compile(r"^\s*(?:<s>)?(?P<text>.*?)(?:</s>)?\s*\((?P<id>[^()\s]+)\)\s*$")

FSDD_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z0-9]+)_(?P<take>[0-9]+)\.wav$")
#: Takes below this number form FSDD's own test split.
FSDD_TEST_TAKES = 5
DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def prepare_an4(src: str | Path, out: str | Path) -> dict[str, Path]:
    """Write ``out/train.jsonl`` and ``out/test.jsonl`` for CMU AN4 read from ``src``.

    Raises:
        DataSourceError: a file of the layout is missing, a transcript line is malformed, or
            transcripts and file ids disagree.
    """
    src, out = Path(src).resolve(), Path(out)
    written = {}
    for split in AN4_SPLITS:
        utterances = _an4_split(src, split)
        written[split] = write_manifest(_with_durations(utterances), out / f"{split}.jsonl")
        log.info("an4 %s: %d utterances -> %s", split, len(utterances), written[split])
    return written


def _an4_split(src: Path, split: str) -> list[Utterance]:
    etc = src / "etc"
    transcription = etc / f"an4_{split}.transcription"
    fileids = etc / f"an4_{split}.fileids"
    for needed in (transcription, fileids):
        if not needed.is_file():
            raise DataSourceError(
                f"{needed} is missing: {src} does not look like CMU's an4_sphere folder "
                "(etc/an4_train.transcription, etc/an4_train.fileids, wav/...)"
            )
    texts: dict[str, str] = {}
    for lineno, line in enumerate(transcription.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = AN4_LINE.match(line)
        if match is None:
            raise DataSourceError(
                f"{transcription}:{lineno}: expected '<s> TEXT </s> (utterance-id)', got {line!r}"
            )
        texts[match["id"]] = " ".join(match["text"].split())
    paths = [p.strip() for p in fileids.read_text(encoding="utf-8").splitlines() if p.strip()]
    ids = {Path(p).name: p for p in paths}
    if set(ids) != set(texts):
        unmatched = sorted(set(ids) ^ set(texts))
        raise DataSourceError(
            f"{transcription.name} and {fileids.name} list different utterances, e.g. "
            f"{unmatched[:5]}"
        )
    return [
        Utterance(
            id=utt_id,
            audio=str(src / "wav" / (ids[utt_id] + AN4_AUDIO_SUFFIX)),
            text=texts[utt_id],
            speaker=Path(ids[utt_id]).parent.name,
        )
        for utt_id in sorted(ids)
    ]


def prepare_fsdd(src: str | Path, out: str | Path) -> dict[str, Path]:
    """Write ``out/train.jsonl`` and ``out/test.jsonl`` for the Free Spoken Digit Dataset.

    Raises:
        DataSourceError: ``src/recordings`` is missing or holds no recordings.
    """
    src, out = Path(src).resolve(), Path(out)
    recordings = src / "recordings"
    if not recordings.is_dir():
        raise DataSourceError(
            f"{recordings} is missing: point to the Free Spoken Digit Dataset folder holding "
            "recordings/{digit}_{speaker}_{take}.wav"
        )
    splits: dict[str, list[Utterance]] = {"train": [], "test": []}
    ignored = []
    for path in sorted(recordings.iterdir()):
        match = FSDD_NAME.match(path.name)
        if match is None:
            ignored.append(path.name)
            continue
        split = "test" if int(match["take"]) < FSDD_TEST_TAKES else "train"
        splits[split].append(
            Utterance(
                id=path.stem,
                audio=str(path),
                text=DIGIT_WORDS[int(match["digit"])],
                speaker=match["speaker"],
            )
        )
    if ignored:
        log.warning(
            "fsdd: ignored %d files not named like 0_george_3.wav: %s",
            len(ignored),
            ignored,
        )
    if not any(splits.values()):
        raise DataSourceError(f"{recordings} holds no digit_speaker_take.wav recordings")
    written = {}
    for split, utterances in splits.items():
        utterances.sort(key=lambda u: u.id)
        written[split] = write_manifest(_with_durations(utterances), out / f"{split}.jsonl")
        log.info("fsdd %s: %d utterances -> %s", split, len(utterances), written[split])
    return written


def _with_durations(utterances: Sequence[Utterance]) -> list[Utterance]:
    """Utterances carrying durations read from their headers; any failure stops preparation."""
    durations = measure_durations(utterances)
    failed = [(u.audio, d) for u, d in zip(utterances, durations, strict=True) if not _ok(d)]
    if failed:
        listed = "; ".join(f"{path}: {err.reason}" for path, err in failed[:5])
        raise DataSourceError(
            f"{len(failed)} of {len(utterances)} audio files could not be read ({listed}): "
            "the corpus is incomplete or damaged; download it again"
        )
    return [replace(u, duration=d) for u, d in zip(utterances, durations, strict=True)]


def _ok(duration: float | AudioDecodeError) -> bool:
    return not isinstance(duration, AudioDecodeError)
