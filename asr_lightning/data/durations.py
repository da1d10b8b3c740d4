"""Audio durations, measured from file headers and cached in SQLite.

Training needs every utterance's duration before the first batch (filtering, bucketing), and a
corpus is scanned again at every launch and on every DDP rank. :class:`DurationCache` keeps the
answers in one SQLite file keyed by (absolute path, size, mtime_ns), so a file that changes is
measured again; several processes may share the file. Keep it on a local disk: SQLite locking is
unreliable on network file systems.

Failures are cached too (with every backend's reason): a file that did not decode yesterday and
has not changed since will not decode today. Delete the cache file after installing a decoder.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from asr_lightning import errors
from asr_lightning.audio.decode import DEFAULT_BACKENDS, Backend, audio_duration
from asr_lightning.data.sources import Utterance
from asr_lightning.errors import AudioDecodeError

log = logging.getLogger(__name__)

#: (absolute path, size in bytes, modification time in ns): a file's identity for the cache.
CacheKey = tuple[str, int, int]
Measured = float | AudioDecodeError

#: Seconds a process waits for another one's write lock before giving up.
LOCK_TIMEOUT_S = 60.0
#: Files measured (and written to the cache) per step; an interrupted scan keeps its progress.
CHUNK = 1000
#: Paths per ``IN (...)`` query (SQLite allows at least 999 parameters).
QUERY_CHUNK = 500
#: Header reads run in threads: libsndfile releases the GIL and files may be on slow storage.
DEFAULT_WORKERS = 4
_COLUMNS = "path, size, mtime_ns, seconds, error"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS durations (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    seconds REAL,
    error TEXT
)
"""


def file_key(path: str | os.PathLike[str]) -> CacheKey:
    """The cache key of a file; raises ``OSError`` when it cannot be stat'ed."""
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    return absolute, stat.st_size, stat.st_mtime_ns


#: Where training and ``data check`` share measured durations unless told otherwise.
DEFAULT_CACHE_PATH = "~/.cache/asr-lightning/durations.sqlite"


class DurationCache:
    """Durations (or decode failures) of audio files, persisted in SQLite.

    Args:
        path: SQLite file to keep the cache in (created with its folder); ``None`` keeps it in
            memory for the life of this object.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"DurationCache({str(self.path) if self.path else None!r})"

    def __getstate__(self) -> dict[str, Any]:
        # A connection cannot cross a process boundary: each process opens its own.
        return {"path": self.path, "_conn": None}

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path is None:
                self._conn = sqlite3.connect(":memory:")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S)
                try:  # readers do not block the writer; not available on every file system
                    self._conn.execute("PRAGMA journal_mode=WAL")
                except sqlite3.OperationalError as err:
                    log.debug("duration cache %s: WAL unavailable (%s)", self.path, err)
            self._conn.execute(_SCHEMA)
            self._conn.commit()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DurationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM durations").fetchone()[0]

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, Measured]:
        """Cached results of the keys that are present and still match size and mtime."""
        found: dict[CacheKey, Measured] = {}
        wanted = {key[0]: key for key in keys}
        paths = list(wanted)
        for start in range(0, len(paths), QUERY_CHUNK):
            chunk = paths[start : start + QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {_COLUMNS} FROM durations WHERE path IN ({marks})"
            for path, size, mtime_ns, seconds, error in self.conn.execute(query, chunk):
                key = wanted[path]
                if (size, mtime_ns) == key[1:]:
                    found[key] = _load_error(path, error) if error else float(seconds)
        return found

    def put_many(self, results: Iterable[tuple[CacheKey, Measured]]) -> None:
        """Store results in one transaction, replacing older entries of the same paths."""
        rows = [
            (*key, None, _dump_error(value))
            if isinstance(value, AudioDecodeError)
            else (*key, float(value), None)
            for key, value in results
        ]
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO durations VALUES (?, ?, ?, ?, ?)", rows)

    def get(self, path: str | os.PathLike[str]) -> Measured | None:
        """The cached result for a file as it is now, ``None`` when absent or stale."""
        key = file_key(path)
        return self.get_many([key]).get(key)

    def put(self, path: str | os.PathLike[str], value: Measured) -> None:
        """Cache the result for a file as it is now."""
        self.put_many([(file_key(path), value)])


def _dump_error(err: AudioDecodeError) -> str:
    return json.dumps({"type": type(err).__name__, "reasons": err.reasons})


def _load_error(path: str, stored: str) -> AudioDecodeError:
    data = json.loads(stored)
    cls = getattr(errors, data.get("type", ""), AudioDecodeError)
    if not (isinstance(cls, type) and issubclass(cls, AudioDecodeError)):
        cls = AudioDecodeError
    return cls(path, data.get("reasons", {}), hint="(cached result: delete the cache to retry)")


def measure_durations(
    utterances: Sequence[Utterance],
    cache: DurationCache | None = None,
    progress: bool = False,
    *,
    verify: bool = False,
    backends: Sequence[Backend] = DEFAULT_BACKENDS,
    workers: int = DEFAULT_WORKERS,
) -> list[Measured]:
    """Duration in seconds of each utterance, or the :class:`AudioDecodeError` it failed with.

    Failures are returned, not raised, so one bad file does not stop a scan.

    Args:
        utterances: What to measure.
        cache: Where to look up and store durations of files; ``None`` measures every file.
        progress: Show a progress bar while files are measured.
        verify: Measure even utterances whose source states a duration (otherwise trusted).
        backends: Decoders tried in turn for each header read.
        workers: Threads reading headers.
    """
    results: list[Measured | None] = [None] * len(utterances)
    by_path: dict[str, list[int]] = {}
    encoded: list[int] = []
    for index, utt in enumerate(utterances):
        if utt.duration is not None and not verify:
            results[index] = utt.duration
        elif isinstance(utt.audio, bytes):
            encoded.append(index)
        else:
            by_path.setdefault(os.path.abspath(utt.audio), []).append(index)

    keys: dict[str, CacheKey] = {}
    for path in by_path:
        try:
            keys[path] = file_key(path)
        except OSError as err:
            missing = AudioDecodeError(path, {"open": _os_reason(err)}, hint="check the path")
            for index in by_path[path]:
                results[index] = missing
    cached = cache.get_many(list(keys.values())) if cache is not None else {}
    for path, key in keys.items():
        if key in cached:
            for index in by_path[path]:
                results[index] = cached[key]
    todo = [key for key in keys.values() if key not in cached]
    log.debug("durations: %d from the cache, %d to measure", len(cached), len(todo) + len(encoded))

    def measure(source: str | bytes) -> Measured:
        try:
            return audio_duration(source, backends=backends)
        except AudioDecodeError as err:
            return err

    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tqdm(
            total=len(todo) + len(encoded),
            disable=not progress or not (todo or encoded),
            desc="measuring durations",
            unit="file",
        ) as bar,
    ):
        for chunk in _chunks(todo, CHUNK):
            measured = list(pool.map(measure, [key[0] for key in chunk]))
            if cache is not None:
                cache.put_many(zip(chunk, measured, strict=True))
            for key, value in zip(chunk, measured, strict=True):
                for index in by_path[key[0]]:
                    results[index] = value
            bar.update(len(chunk))
        for chunk in _chunks(encoded, CHUNK):  # encoded bytes: measured, never cached
            for index, value in zip(
                chunk, pool.map(measure, [utterances[i].audio for i in chunk]), strict=True
            ):
                results[index] = value
            bar.update(len(chunk))
    return results  # type: ignore[return-value]  # every slot is filled above


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _os_reason(err: OSError) -> str:
    return "file not found" if isinstance(err, FileNotFoundError) else (err.strerror or str(err))
