"""What a dataset source is and what it yields: the records both source readers share.

:mod:`asr_lightning.data.sources` (files and folders) and :mod:`asr_lightning.data.hf_source`
(Hugging Face datasets) read rows into :class:`Utterance` records with these column rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from asr_lightning.errors import ConfigError, DataSourceError

SourceKind = Literal["auto", "manifest", "csv", "common_voice", "hf_hub", "hf_disk", "parquet"]

DEFAULT_AUDIO_COLUMN = "audio"
DEFAULT_TEXT_COLUMN = "sentence"
#: Tried in order when the configured column is the default one and is absent.
AUDIO_COLUMN_CANDIDATES = ("audio_filepath", "path", "audio", "file", "filename", "file_name")
TEXT_COLUMN_CANDIDATES = ("sentence", "text", "transcript", "transcription")
SPEAKER_COLUMN_CANDIDATES = ("speaker", "speaker_id", "client_id")


@dataclass(frozen=True)
class Utterance:
    """One transcribed recording, not yet decoded."""

    id: str
    audio: str | bytes  # absolute path, or the encoded file's bytes
    text: str  # raw transcript, as the source has it
    duration: float | None = None  # seconds, when the source states it
    speaker: str | None = None


@dataclass(frozen=True)
class Item:
    """What a dataset needs per utterance: where the audio is and its normalized text."""

    id: str
    audio: str | bytes
    text: str
    duration: float
    unreadable: str | None = None  # why setup could not read it (evaluation sets keep it)
    speaker: str | None = None  # for per-speaker error rates in the evaluation report


@dataclass(frozen=True)
class SourceConfig:
    """Where a dataset is and how to read it.

    Args:
        path: Manifest/CSV/TSV/Parquet file, Common Voice or ``save_to_disk`` folder, or a Hub
            dataset id (``owner/name``, with ``kind: hf_hub``; ``hf:owner/name`` also works).
        kind: How to read ``path``; ``auto`` decides from the file suffix or folder contents.
        split: Split to read (Common Voice: train, dev, test, validated...; default train).
        name: Configuration of a Hub dataset (e.g. ``en``).
        audio_column: Column holding the audio (or its path). When left at ``audio`` and absent,
            the first of audio_filepath, path, audio, file, filename, file_name is used.
        text_column: Column holding the transcript. When left at ``sentence`` and absent, the
            first of sentence, text, transcript, transcription is used.
        streaming: Stream a Hub dataset instead of downloading it (iterate with ``iter_source``).
        revision: Git revision (branch, tag or commit) of a Hub dataset.
    """

    path: str
    kind: SourceKind = "auto"
    split: str | None = None
    name: str | None = None
    audio_column: str = DEFAULT_AUDIO_COLUMN
    text_column: str = DEFAULT_TEXT_COLUMN
    streaming: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(SourceKind):
            raise ConfigError(
                f"source kind must be one of {', '.join(get_args(SourceKind))}, got {self.kind!r}"
            )


# ------------------------------------------------------------------------------ columns
def pick_column(
    available: Sequence[str], configured: str, default: str, candidates: Sequence[str], what: str
) -> str:
    """The column to read: the configured one, or (if left at its default) a known alias."""
    if configured in available:
        return configured
    if configured == default:
        for candidate in candidates:
            if candidate in available:
                return candidate
    raise DataSourceError(
        f"no {what} column {configured!r}; available columns: {', '.join(available) or 'none'}. "
        f"Set {what}_column to one of them."
    )


def optional_column(available: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in available), None)


def duration_value(value: Any, where: str) -> float | None:
    """A stated duration in seconds, ``None`` when absent or not a finite number."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError) as err:
        raise DataSourceError(f"{where}: duration {value!r} is not a number") from err
    return seconds if math.isfinite(seconds) else None
