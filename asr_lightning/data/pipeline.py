"""Set-up of a source in chunks, on every core: read, measure, filter, into columns.

A source is set up a chunk of rows at a time: its rows are read (:mod:`.sources`), their
durations measured or looked up (:mod:`.durations`), filtered (:mod:`.filters`) and the kept
ones stored in columns (:mod:`.table`). Chunks are independent, so a large source is set up in a
pool of forked processes, one chunk per task: a JSON-lines manifest is split into byte spans that
each process parses itself; rows read before (for the vocabulary) are inherited, and each
task is a range of their rows. Results come back as columns, in order, and are joined: the
outcome is the same table, report and sample as one process gives, in the same order.

Everything a chunk needs besides its rows (:class:`ChunkJob`: rules, normalizer, label counter,
duration cache path) reaches the processes by ``fork``, never pickled; where ``fork`` is not
available (macOS, Windows default to ``spawn``) the chunks run in this process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from asr_lightning.data.durations import DurationCache, measure_durations
from asr_lightning.data.filters import FilterReport, FilterRules, decode_reason, filter_utterances
from asr_lightning.data.records import SourceConfig, Utterance
from asr_lightning.data.sources import ManifestSpan, iter_manifest, manifest_spans, resolve_kind
from asr_lightning.data.table import ItemTable, ItemTableBuilder
from asr_lightning.errors import AudioDecodeError

#: Rows read, measured and filtered at a time.
CHUNK_ROWS = 65_536
#: Bytes of a JSON-lines manifest one task parses (about 60k Common Voice-like rows).
SPAN_BYTES = 8 << 20
#: Sources with fewer rows than this are set up in this process: a pool would cost more
#: (forking, sending results) than it saves.
MIN_PARALLEL_ROWS = 2 * CHUNK_ROWS
#: Evaluation and training transcripts kept in order to explain a vocabulary that does not fit.
SAMPLE_ROWS = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class ChunkJob:
    """What setting up any chunk of one source needs besides its rows.

    Args:
        rules: Duration limits and the model's output frame rate.
        normalizer: Raw transcript to label text.
        label_count: Label text to its label count (or its labels).
        cache_path: The SQLite duration cache; ``None``: measure every file without durations.
        keep_unreadable: Keep rows whose audio cannot be read, as unreadable items (evaluation
            sets are scored whole), rather than only counting them.
        progress: Show the duration measurement's progress bar (off in the pool's processes,
            whose bars would interleave).
    """

    rules: FilterRules
    normalizer: Callable[[str], str]
    label_count: Callable[[str], Any] | None
    cache_path: str | None
    keep_unreadable: bool
    progress: bool = True


@dataclass
class Prepared:
    """A set-up source: the kept rows, the unreadable rows, the filter report, a sample."""

    table: ItemTable
    unreadable: ItemTable
    report: FilterReport = field(default_factory=FilterReport)
    sample: list[Utterance] = field(default_factory=list)


def prepare_chunk(
    job: ChunkJob, rows: Sequence[Utterance], cache: DurationCache | None
) -> Prepared:
    """Measure and filter one chunk of rows into columns."""
    durations = measure_durations(rows, cache, progress=job.progress and len(rows) > 2000)
    kept, report = filter_utterances(rows, durations, job.rules, job.normalizer, job.label_count)
    table = ItemTableBuilder()
    for k in kept:
        utt = k.utterance
        table.append_row(utt.id, utt.audio, k.text, k.duration, speaker=utt.speaker)
    unreadable = ItemTableBuilder()
    if job.keep_unreadable:
        for utt, duration in zip(rows, durations, strict=True):
            if isinstance(duration, AudioDecodeError):
                reason = decode_reason(duration)
                text = job.normalizer(utt.text)
                unreadable.append_row(utt.id, utt.audio, text, 0.0, reason, utt.speaker)
    return Prepared(table.finish(), unreadable.finish(), report, list(rows[:SAMPLE_ROWS]))


def join(parts: list[Prepared]) -> Prepared:
    """Chunks' results as one, in order."""
    report = FilterReport()
    sample: list[Utterance] = []
    for part in parts:
        report = report.merge(part.report)
        sample += part.sample[: SAMPLE_ROWS - len(sample)]
    return Prepared(
        ItemTable.concat([p.table for p in parts]),
        ItemTable.concat([p.unreadable for p in parts]),
        report,
        sample,
    )


def prepare_rows(job: ChunkJob, rows: Iterable[Utterance]) -> list[Prepared]:
    """Set up rows read in this process, a chunk at a time (never all of them as objects).

    Returns the chunks' results, to :func:`join`.
    """
    cache = DurationCache(os.path.expanduser(job.cache_path)) if job.cache_path else None
    try:
        return [prepare_chunk(job, chunk, cache) for chunk in chunks(rows, CHUNK_ROWS)]
    finally:
        if cache is not None:
            cache.close()


def prepare_table(job: ChunkJob, rows: ItemTable, workers: int) -> list[Prepared]:
    """Set up rows read before (raw transcripts; NaN duration: none stated), in ``workers``
    processes when there are enough of them. The processes inherit ``rows`` and are sent only
    row ranges. Returns the chunks' results, to :func:`join` (drop ``rows`` first: the kept rows
    then take their memory)."""
    if workers < 2 or len(rows) < MIN_PARALLEL_ROWS or not can_fork():
        return prepare_rows(job, utterances(rows))
    ranges = [(start, start + CHUNK_ROWS) for start in range(0, len(rows), CHUNK_ROWS)]
    return run_pool(_prepare_range, ranges, workers, (replace(job, progress=False), rows))


def prepare_spans(
    job: ChunkJob, config: SourceConfig, spans: list[ManifestSpan], workers: int
) -> list[Prepared]:
    """Set up a JSON-lines manifest from its spans, one task per span (results to
    :func:`join`)."""
    tasks = [(config, span) for span in spans]
    return run_pool(_prepare_span, tasks, workers, replace(job, progress=False))


@dataclass
class RawRows:
    """Rows as a source has them (raw transcripts), and the characters of their normalized
    transcripts: what building a vocabulary reads."""

    table: ItemTable
    characters: set[str]


def read_spans(
    normalizer: Any, config: SourceConfig, spans: list[ManifestSpan], workers: int
) -> RawRows:
    """Parse a JSON-lines manifest's spans in ``workers`` processes into raw rows, with the
    characters of their transcripts under ``normalizer`` (its :meth:`characters`)."""
    parts = run_pool(_read_span, [(config, span) for span in spans], workers, normalizer)
    characters: set[str] = set()
    for part in parts:
        characters |= part.characters
    return RawRows(ItemTable.concat([p.table for p in parts]), characters)


def manifest_spans_to_split(config: SourceConfig, workers: int) -> list[ManifestSpan] | None:
    """The spans to set a source up from in ``workers`` processes, or ``None`` when it is set
    up in this process: not a JSON-lines manifest, too small to gain, one worker, no ``fork``."""
    if workers < 2 or not can_fork() or resolve_kind(config) != "manifest":
        return None
    path = Path(config.path)
    try:
        if path.stat().st_size < 2 * SPAN_BYTES:
            return None
    except OSError:
        return None  # the reader names the file and the error
    spans = manifest_spans(path, config, SPAN_BYTES)
    return spans if spans and len(spans) > 1 else None


def raw_texts(rows: Iterable[Utterance], builder: ItemTableBuilder) -> Iterator[str]:
    """The raw transcripts of ``rows``, keeping each row in ``builder`` (NaN: no duration)."""
    for utt in rows:
        duration = math.nan if utt.duration is None else utt.duration
        builder.append_row(utt.id, utt.audio, utt.text, duration, speaker=utt.speaker)
        yield utt.text


def utterances(rows: ItemTable) -> Iterator[Utterance]:
    """The utterances of raw rows (NaN duration: none stated)."""
    durations = rows.durations.tolist()
    columns = zip(rows.ids, rows.audio, rows.texts, durations, rows.speakers, strict=True)
    for uid, audio, text, duration, speaker in columns:  # no Item per row
        stated = None if math.isnan(duration) else duration
        yield Utterance(str(uid), audio, str(text), stated, speaker)


def chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def default_workers(processes_per_node: int = 1) -> int:
    """Processes a set-up may use: the CPUs this process may run on, shared by the training
    processes of the node (each DDP rank sets up its own copy)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, processes_per_node))


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


# ------------------------------------------------------------------------------ the pool
#: The job of the pool's processes, inherited through ``fork`` (set by :func:`run_pool`).
_JOB: Any = None
#: The duration cache of this process (a pool's process opens its own).
_CACHE: DurationCache | None = None


def run_pool(task: Callable[[Any], T], items: Sequence[Any], workers: int, job: Any) -> list[T]:
    """``[task(item) for item in items]`` in up to ``workers`` forked processes that inherit
    ``job``, in order; in this process when forking is not possible or pointless."""
    global _JOB
    workers = min(workers, len(items))
    if workers < 2 or not can_fork():
        _JOB = job
        try:
            return [task(item) for item in items]
        finally:
            _close_inherited()
    context = multiprocessing.get_context("fork")
    _JOB = job  # the processes are forked at the first submit, after this
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_forked) as pool:
            return list(pool.map(task, items))
    finally:
        _JOB = None


def _forked() -> None:
    """In a forked process: never use the parent's SQLite connection."""
    global _CACHE
    _CACHE = None


def _close_inherited() -> None:
    global _JOB, _CACHE
    if _CACHE is not None:
        _CACHE.close()
    _JOB, _CACHE = None, None


def _cache(job: ChunkJob) -> DurationCache | None:
    global _CACHE
    path = job.cache_path
    if path and _CACHE is None:
        _CACHE = DurationCache(os.path.expanduser(path))
    return _CACHE


def _prepare_range(bounds: tuple[int, int]) -> Prepared:
    job, table = _JOB
    rows = list(utterances(table.rows(*bounds)))
    return prepare_chunk(job, rows, _cache(job))


def _prepare_span(task: tuple[SourceConfig, ManifestSpan]) -> Prepared:
    config, span = task
    rows = list(iter_manifest(span.path, config, span))
    return prepare_chunk(_JOB, rows, _cache(_JOB))


def _read_span(task: tuple[SourceConfig, ManifestSpan]) -> RawRows:
    config, span = task
    builder = ItemTableBuilder()
    characters = _JOB.characters(raw_texts(iter_manifest(span.path, config, span), builder))
    return RawRows(builder.finish(), characters)
