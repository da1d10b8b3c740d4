"""The per-utterance records of an evaluation set, read from a predictions JSON-lines file.

``asr-lightning test`` writes one file per test set (``predictions/test_<set>.jsonl``); each line
holds an utterance's ``id``, ``reference``, ``hypothesis``, its error counts
(:func:`asr_lightning.model.metrics.utterance_errors`), its ``confidence`` and, since the report
needs them, ``duration_s``, ``speaker`` and ``audio``. The counts are read as written, so the
report's error rates are the run's logged ones; a line without counts (a file written by hand)
is scored here, the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr_lightning.errors import DataSourceError

#: Error counts of a scored record, as :func:`~asr_lightning.model.metrics.utterance_errors`
#: names them.
COUNT_FIELDS = ("word_errors", "ref_words", "char_errors", "ref_chars")
#: The prefix ``asr-lightning test`` gives its files (``test_<set>.jsonl``).
TEST_FILE_PREFIX = "test_"
FIX = (
    "give the JSON-lines files `asr-lightning test` writes (<run folder>/predictions/"
    "test_<set>.jsonl), or lines holding at least id, reference and hypothesis"
)


@dataclass(frozen=True)
class ScoredUtterance:
    """One line of a predictions file.

    ``counts`` is ``None`` for an utterance left out of the error rates (unreadable audio with
    ``model.unreadable: exclude``).
    """

    id: str
    reference: str
    hypothesis: str
    counts: Mapping[str, int] | None
    confidence: float | None = None
    duration_s: float | None = None
    speaker: str | None = None
    audio: str | None = None
    unreadable: str | None = None  # why its audio could not be read

    @property
    def word_errors(self) -> int:
        return self.counts["word_errors"] if self.counts else 0

    @property
    def ref_words(self) -> int:
        return self.counts["ref_words"] if self.counts else 0

    @property
    def wer(self) -> float:
        """Its word error rate (its errors per reference word; errors alone when it has none)."""
        return self.word_errors / max(1, self.ref_words)


@dataclass(frozen=True)
class EvaluationSet:
    """The records of one predictions file: one evaluation set."""

    name: str
    path: Path
    utterances: list[ScoredUtterance]

    @property
    def scored(self) -> list[ScoredUtterance]:
        """The utterances counted in the error rates."""
        return [u for u in self.utterances if u.counts is not None]


def set_name(path: Path) -> str:
    """The set a predictions file holds: its name without ``.jsonl`` and the ``test_`` prefix."""
    return path.stem.removeprefix(TEST_FILE_PREFIX) or path.stem


def read_predictions(path: str | Path) -> EvaluationSet:
    """Read one predictions file.

    Raises:
        DataSourceError: the file is missing or unreadable, a line is not a JSON object, lacks
            ``id``/``reference``/``hypothesis`` or holds a value of the wrong type, or no line is
            scored.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise DataSourceError(f"no predictions file {path}: {FIX}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataSourceError(f"cannot read predictions file {path}: {err}; {FIX}") from err
    utterances = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            utterances.append(_record(line, f"{path}:{number}"))
    if not any(u.counts is not None for u in utterances):
        raise DataSourceError(
            f"{path} holds no scored utterance (none of its {len(utterances)} records has a "
            f"reference and error counts): {FIX}"
        )
    return EvaluationSet(set_name(path), path, utterances)


def _record(line: str, where: str) -> ScoredUtterance:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataSourceError(f"{where}: not JSON ({err.msg}): {FIX}") from err
    if not isinstance(row, dict):
        raise DataSourceError(f"{where}: a JSON {type(row).__name__}, not an object: {FIX}")
    missing = [key for key in ("id", "reference", "hypothesis") if key not in row]
    if missing:
        raise DataSourceError(f"{where}: no {', '.join(missing)} field: {FIX}")
    reference = _text(row, "reference", where)
    hypothesis = _text(row, "hypothesis", where)
    unreadable = _optional(row, "unreadable", str, where)
    present = [key for key in COUNT_FIELDS if row.get(key) is not None]
    if present:
        counts = {key: _count(row, key, where) for key in COUNT_FIELDS}
    elif unreadable is not None:  # left out of the error rates by the run
        counts = None
    else:  # imported here: metrics imports torch, which files from a test run never need
        from asr_lightning.model.metrics import utterance_errors

        counts = utterance_errors(reference, hypothesis)
    confidence = _optional(row, "confidence", float, where)
    duration = _optional(row, "duration_s", float, where)
    speaker = row.get("speaker")
    return ScoredUtterance(
        id=str(row["id"]),
        reference=reference,
        hypothesis=hypothesis,
        counts=counts,
        confidence=confidence,
        duration_s=duration,
        speaker=None if speaker in (None, "") else str(speaker),
        audio=_optional(row, "audio", str, where),
        unreadable=unreadable,
    )


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataSourceError(f"{where}: {key} must be a string, got {value!r}: {FIX}")
    return value


def _count(row: dict[str, Any], key: str, where: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        given = ", ".join(f"{k}={row.get(k)!r}" for k in COUNT_FIELDS)
        raise DataSourceError(
            f"{where}: {key} must be a count (an integer >= 0), got {value!r} ({given}); a "
            f"scored line holds all of {', '.join(COUNT_FIELDS)} or none: {FIX}"
        )
    return value


def _optional(row: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = row.get(key)
    if value is None:
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, kind):
        return value
    raise DataSourceError(f"{where}: {key} must be a {kind.__name__} or null, got {value!r}: {FIX}")
