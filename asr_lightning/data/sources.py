"""Dataset sources: manifests, CSV/TSV tables, Common Voice folders and Hugging Face datasets.

Every source becomes a list of :class:`Utterance` (audio path or encoded bytes + raw transcript).
Nothing is decoded here: durations are measured by :mod:`asr_lightning.data.durations` and audio
by :mod:`asr_lightning.audio.decode`. A source is named by a :class:`SourceConfig` or by a
string shorthand:

- ``train.jsonl`` / ``.json``: NeMo-style JSON lines (``audio_filepath``, ``text``, ``duration``);
- ``table.csv`` / ``.tsv``: a table with an audio-path column and a transcript column;
- ``cv-corpus/en`` or ``cv-corpus/en#dev``: a Common Voice release folder (``clips/`` + TSVs);
- a folder written by ``datasets.Dataset.save_to_disk`` (``DIR`` or ``DIR#test``);
- ``data.parquet``: a Parquet file with an audio column (as Hugging Face stores datasets);
- ``hf:owner/name``, ``hf:owner/name:config#split``: a dataset on the Hugging Face Hub.

Rows a source has to skip (a Common Voice clip that is missing) are counted and logged, never
dropped silently: :func:`read_source` returns them with the utterances.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asr_lightning.data.records import (
    AUDIO_COLUMN_CANDIDATES,
    DEFAULT_AUDIO_COLUMN,
    DEFAULT_TEXT_COLUMN,
    SPEAKER_COLUMN_CANDIDATES,
    TEXT_COLUMN_CANDIDATES,
    SourceConfig,
    SourceKind,
    Utterance,
    duration_value,
    optional_column,
    pick_column,
)
from asr_lightning.errors import DataSourceError

log = logging.getLogger(__name__)


#: Prefix of the string shorthand for a dataset on the Hugging Face Hub.
HF_PREFIX = "hf:"
#: Separates a split from a path in the string shorthand (``cv-corpus/en#dev``).
SPLIT_SEPARATOR = "#"
MANIFEST_SUFFIXES = (".jsonl", ".json")
TABLE_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet",)
#: A Common Voice release folder: ``clips/`` next to one TSV per split.
CV_SPLITS = ("train", "dev", "test", "validated", "other", "invalidated")
CV_DEFAULT_SPLIT = "train"
CV_REQUIRED_COLUMNS = ("client_id", "path", "sentence")
#: A skip reason is logged with at most this many example rows.
LOGGED_EXAMPLES = 5


@dataclass
class LoadedSource:
    """Utterances read from a source, and the rows it had to skip (reason -> row names)."""

    utterances: list[Utterance]
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def skipped_count(self) -> int:
        return sum(len(rows) for rows in self.skipped.values())


def parse_spec(spec: str | SourceConfig) -> SourceConfig:
    """Turn the string shorthand into a :class:`SourceConfig` (a config is returned as is)."""
    if isinstance(spec, SourceConfig):
        return spec
    if spec.startswith(HF_PREFIX):
        dataset_id, _, split = spec[len(HF_PREFIX) :].partition(SPLIT_SEPARATOR)
        dataset_id, _, name = dataset_id.partition(":")
        return SourceConfig(dataset_id, "hf_hub", split=split or None, name=name or None)
    path, split = spec, None
    if SPLIT_SEPARATOR in spec and not os.path.exists(spec):
        path, _, split = spec.rpartition(SPLIT_SEPARATOR)
    return SourceConfig(path, split=split or None)


def resolve_kind(config: SourceConfig) -> SourceKind:
    """The concrete kind of ``config`` (``auto`` resolved from the path)."""
    if config.kind != "auto":
        return config.kind
    path = Path(config.path)
    if not path.exists():
        raise DataSourceError(
            f"dataset source {config.path!r} does not exist. Give a manifest (.jsonl), a table "
            "(.csv/.tsv), a Common Voice or save_to_disk folder, or hf:owner/name for the Hub."
        )
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in MANIFEST_SUFFIXES:
            return "manifest"
        if suffix in TABLE_SUFFIXES:
            return "csv"
        if suffix in PARQUET_SUFFIXES:
            return "parquet"
        raise DataSourceError(
            f"cannot tell what kind of dataset {config.path!r} is from its suffix {suffix!r}: "
            "use .jsonl (manifest), .csv/.tsv or .parquet, or set kind explicitly"
        )
    if (path / "clips").is_dir() and any((path / f"{s}.tsv").is_file() for s in CV_SPLITS):
        return "common_voice"
    if is_saved_dataset(path):
        return "hf_disk"
    raise DataSourceError(
        f"folder {config.path!r} is neither a Common Voice release (clips/ and train.tsv, "
        "dev.tsv, test.tsv...) nor a dataset saved with datasets' save_to_disk"
    )


def read_source(spec: str | SourceConfig) -> LoadedSource:
    """Read every utterance of a source, with the rows that had to be skipped."""
    config = parse_spec(spec)
    kind = resolve_kind(config)
    if kind == "manifest":
        return LoadedSource(read_manifest(Path(config.path), config))
    if kind == "csv":
        return read_table(Path(config.path), config)
    if kind == "common_voice":
        return read_common_voice(Path(config.path), config.split or CV_DEFAULT_SPLIT)
    from asr_lightning.data.hf_source import iter_hf  # imports datasets: only when needed

    return LoadedSource(list(iter_hf(config, kind)))


def load_source(spec: str | SourceConfig) -> list[Utterance]:
    """Read every utterance of a source; skipped rows are logged as warnings.

    Raises:
        DataSourceError: the source is missing, malformed, or lacks the audio/text columns.
    """
    loaded = read_source(spec)
    for reason, rows in loaded.skipped.items():
        log.warning(
            "%s: skipped %d rows (%s), e.g. %s",
            spec,
            len(rows),
            reason,
            ", ".join(rows[:LOGGED_EXAMPLES]),
        )
    return loaded.utterances


def iter_source(spec: str | SourceConfig) -> Iterator[Utterance]:
    """Yield the utterances of a source one by one; streams Hub datasets with ``streaming``."""
    config = parse_spec(spec)
    kind = resolve_kind(config)
    if kind in ("hf_hub", "hf_disk", "parquet"):
        from asr_lightning.data.hf_source import iter_hf

        yield from iter_hf(config, kind)
    elif kind == "manifest":
        yield from iter_manifest(Path(config.path), config)
    else:
        yield from load_source(config)


def is_saved_dataset(folder: Path) -> bool:
    """Whether ``folder`` was written by ``save_to_disk`` (of a ``Dataset`` or ``DatasetDict``)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _absolute(audio: str, base: str | Path) -> str:
    if audio.startswith("/") and "/." not in audio and "//" not in audio:
        return audio  # already absolute and normal: the common case, and 10x cheaper
    return os.path.normpath(os.path.join(base, os.path.expanduser(audio)))


# ------------------------------------------------------------------------------ manifests
def read_manifest(path: Path, config: SourceConfig | None = None) -> list[Utterance]:
    """Read a NeMo-style JSON-lines manifest; relative audio paths are resolved against its folder.

    Each line is an object with ``audio_filepath``, ``text`` and optionally ``duration``, ``id``
    and ``speaker``; other fields are ignored. A ``.json`` file holding one JSON list is accepted.
    """
    return list(iter_manifest(path, config))


@dataclass(frozen=True)
class ManifestSpan:
    """A run of whole lines of a JSON-lines manifest, to be read by another process.

    Args:
        path: The manifest.
        start: Byte offset of the span's first line.
        end: Byte offset just past its last line.
        audio_key: The audio field, picked from the file's first record.
        text_key: The transcript field, picked from the file's first record.
    """

    path: Path
    start: int
    end: int
    audio_key: str
    text_key: str


def manifest_spans(
    path: Path, config: SourceConfig | None = None, span_bytes: int = 8 << 20
) -> list[ManifestSpan] | None:
    """Split a JSON-lines manifest into spans of about ``span_bytes`` that start at lines.

    Returns ``None`` for a file that is one JSON list (it must be parsed whole). Reading every
    span with :func:`iter_manifest` gives exactly the utterances of the whole file, in order.
    """
    config = config or SourceConfig(str(path))
    if path.suffix.lower() == ".json" and _starts_with_bracket(path):
        return None
    keys = _first_record_keys(path, config)
    if keys is None:
        return []
    audio_key, text_key = keys
    try:
        size = path.stat().st_size
        starts = [0]
        with path.open("rb") as raw:
            for boundary in range(span_bytes, size, span_bytes):
                if boundary <= starts[-1]:
                    continue
                raw.seek(boundary - 1)
                raw.readline()  # to the start of the next line
                if raw.tell() >= size:
                    break
                starts.append(raw.tell())
    except OSError as err:
        raise DataSourceError(f"cannot read manifest {path}: {err}") from err
    ends = [*starts[1:], size]
    return [
        ManifestSpan(path, a, b, audio_key, text_key) for a, b in zip(starts, ends, strict=True)
    ]


def _starts_with_bracket(path: Path) -> bool:
    try:
        with path.open("rb") as raw:
            return raw.read(4096).lstrip().startswith(b"[")
    except OSError as err:
        raise DataSourceError(f"cannot read manifest {path}: {err}") from err


def iter_manifest(
    path: Path, config: SourceConfig | None = None, span: ManifestSpan | None = None
) -> Iterator[Utterance]:
    """:func:`read_manifest` line by line, without holding the file or its rows in memory.

    Args:
        path: The manifest.
        config: Its source settings (column names).
        span: Read only these lines (from :func:`manifest_spans`); errors still name the line's
            number in the whole file.
    """
    config = config or SourceConfig(str(path))
    base = str(path.resolve().parent)
    audio_key, text_key = (span.audio_key, span.text_key) if span else (None, None)
    records = _ManifestRecords(path, span)
    for lineno, record in records:
        _check_record(record, path, records.line(lineno))
        if audio_key is None or text_key is None:
            audio_key, text_key = _pick_keys(record, config)
        audio, text = record.get(audio_key), record.get(text_key)
        if not isinstance(audio, str) or not audio:
            raise DataSourceError(
                f"{path}:{records.line(lineno)}: field {audio_key!r} must be a non-empty path"
            )
        if not isinstance(text, str):
            raise DataSourceError(
                f"{path}:{records.line(lineno)}: field {text_key!r} must be a string, got {text!r}"
            )
        duration = record.get("duration")
        if duration is not None and not (type(duration) is float and 0 <= duration < math.inf):
            where = f"{path}:{records.line(lineno)}"
            duration = duration_value(duration, where)  # checks and explains
        speaker = record.get("speaker")
        if speaker is None:
            speaker_key = optional_column(record, SPEAKER_COLUMN_CANDIDATES)  # optional per line
            speaker = record[speaker_key] if speaker_key else None
        yield Utterance(
            id=str(record.get("id") or audio),
            audio=_absolute(audio, base),
            text=text,
            duration=duration,
            speaker=None if speaker is None else str(speaker),
        )


def _first_record_keys(path: Path, config: SourceConfig) -> tuple[str, str] | None:
    """The audio and text fields picked from the manifest's first record (``None``: empty)."""
    for lineno, record in _ManifestRecords(path):
        _check_record(record, path, lineno)
        return _pick_keys(record, config)
    return None


def _check_record(record: Any, path: Path, line: int) -> None:
    if not isinstance(record, Mapping):
        raise DataSourceError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")


def _pick_keys(record: Mapping[str, Any], config: SourceConfig) -> tuple[str, str]:
    keys = list(record)
    audio_key = pick_column(
        keys, config.audio_column, DEFAULT_AUDIO_COLUMN, AUDIO_COLUMN_CANDIDATES, "audio"
    )
    text_key = pick_column(
        keys, config.text_column, DEFAULT_TEXT_COLUMN, TEXT_COLUMN_CANDIDATES, "text"
    )
    return audio_key, text_key


class _ManifestRecords:
    """(line number, parsed JSON) per non-empty line; a JSON list file counts as line 1.

    Within a span, numbers count from the span's first line; :meth:`line` turns one into the
    line's number in the whole file (counting the lines before the span only when asked: for
    an error message).
    """

    def __init__(self, path: Path, span: ManifestSpan | None = None) -> None:
        self.path = path
        self.span = span
        self._before: int | None = None

    def line(self, lineno: int) -> int:
        if self.span is None or self.span.start == 0:
            return lineno
        if self._before is None:
            self._before = _count_lines(self.path, self.span.start)
        return self._before + lineno

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        path, span = self.path, self.span
        try:
            if span is None and path.suffix.lower() == ".json" and _starts_with_bracket(path):
                try:
                    records = json.loads(path.read_text(encoding="utf-8"))
                except json.JSONDecodeError as err:
                    raise DataSourceError(f"{path}: invalid JSON: {err}") from err
                yield from ((1, record) for record in records)
                return
            with path.open("rb") as raw:
                if span is not None:
                    raw.seek(span.start)
                    remaining = span.end - span.start
                for lineno, line in enumerate(raw, start=1):
                    if span is not None:
                        remaining -= len(line)
                        if remaining < 0:
                            break
                    if not line.strip():
                        continue
                    try:
                        yield lineno, json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError) as err:
                        why = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
                        raise DataSourceError(
                            f"{path}:{self.line(lineno)}: not valid JSON ({why}); each line of "
                            'a manifest must be one object like {"audio_filepath": ..., '
                            '"text": ..., "duration": ...}'
                        ) from err
        except (OSError, UnicodeDecodeError) as err:  # the second: a JSON list file
            raise DataSourceError(f"cannot read manifest {path}: {err}") from err


def _count_lines(path: Path, end: int) -> int:
    """Newlines in the first ``end`` bytes of ``path``."""
    count = 0
    with path.open("rb") as raw:
        while end > 0:
            block = raw.read(min(end, 1 << 22))
            if not block:
                break
            count += block.count(b"\n")
            end -= len(block)
    return count


def write_manifest(utterances: Sequence[Utterance], path: Path) -> Path:
    """Write utterances with path audio as a NeMo-style manifest (atomically, in the given order).

    Lines hold ``audio_filepath``, ``text``, ``duration`` (when known), ``speaker`` and ``id``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for utt in utterances:
            if not isinstance(utt.audio, str):
                raise DataSourceError(f"utterance {utt.id!r} holds audio bytes, not a file path")
            record: dict[str, Any] = {"audio_filepath": utt.audio, "text": utt.text}
            if utt.duration is not None:
                record["duration"] = round(utt.duration, 4)
            record.update(speaker=utt.speaker, id=utt.id)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------ tables
def read_table(path: Path, config: SourceConfig | None = None) -> LoadedSource:
    """Read a CSV (comma) or TSV (tab, no quoting) table; relative paths resolve to its folder.

    A TSV with Common Voice's header is read as that Common Voice split (clips in ``clips/``).
    """
    config = config or SourceConfig(str(path))
    is_tsv = path.suffix.lower() == ".tsv"
    header, rows = _read_rows(path, is_tsv)
    if is_tsv and all(c in header for c in CV_REQUIRED_COLUMNS) and config.split is None:
        return read_common_voice(path.parent, path.stem)
    audio_col = pick_column(
        header, config.audio_column, DEFAULT_AUDIO_COLUMN, AUDIO_COLUMN_CANDIDATES, "audio"
    )
    text_col = pick_column(
        header, config.text_column, DEFAULT_TEXT_COLUMN, TEXT_COLUMN_CANDIDATES, "text"
    )
    speaker_col = optional_column(header, SPEAKER_COLUMN_CANDIDATES)
    base = path.resolve().parent
    utterances = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        audio, text = row.get(audio_col), row.get(text_col)
        if not audio or text is None:
            raise DataSourceError(f"{where}: row lacks {audio_col!r} or {text_col!r}")
        utterances.append(
            Utterance(
                id=row.get("id") or audio,
                audio=_absolute(audio, base),
                text=text,
                duration=duration_value(row.get("duration"), where),
                speaker=(row.get(speaker_col) or None) if speaker_col else None,
            )
        )
    return LoadedSource(utterances)


def _read_rows(path: Path, is_tsv: bool) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, row) pairs. TSVs are read unquoted: sentences contain quotes."""
    dialect: dict[str, Any] = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if is_tsv else {"delimiter": ","}
    )
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, **dialect)
            header = next(reader, [])
            # Short rows miss trailing columns (older Common Voice TSVs): strict=False.
            rows = [
                (reader.line_num, dict(zip(header, values, strict=False)))
                for values in reader
                if values
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataSourceError(f"cannot read table {path}: {err}") from err
    if not header:
        raise DataSourceError(f"table {path} is empty: expected a header row")
    return header, rows


# ------------------------------------------------------------------------------ Common Voice
def read_common_voice(folder: Path, split: str = CV_DEFAULT_SPLIT) -> LoadedSource:
    """Read one split of a Common Voice release folder (``<split>.tsv`` + ``clips/``).

    The speaker is the row's ``client_id``; rows whose clip is missing are skipped and returned
    under ``skipped["clip missing"]``.
    """
    tsv = folder / f"{split}.tsv"
    if not tsv.is_file():
        present = [s for s in CV_SPLITS if (folder / f"{s}.tsv").is_file()]
        raise DataSourceError(
            f"Common Voice folder {folder} has no split {split!r} ({tsv.name} is missing); "
            f"available splits: {', '.join(present) or 'none'}"
        )
    header, rows = _read_rows(tsv, is_tsv=True)
    missing_columns = [c for c in CV_REQUIRED_COLUMNS if c not in header]
    if missing_columns:
        raise DataSourceError(
            f"{tsv} lacks Common Voice columns {missing_columns}; its header is {header}"
        )
    clips = folder / "clips"
    present_clips = {entry.name for entry in os.scandir(clips)}
    utterances, missing = [], []
    for _, row in rows:
        name = row.get("path") or ""
        if name not in present_clips:
            missing.append(name or "<empty path>")
            continue
        utterances.append(
            Utterance(
                id=Path(name).stem,
                audio=str((clips / name).resolve()),
                text=row.get("sentence") or "",
                speaker=row.get("client_id") or None,
            )
        )
    skipped = {"clip missing": missing} if missing else {}
    return LoadedSource(utterances, skipped)
