"""Durations from headers, cached in SQLite by (path, size, mtime_ns)."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lightning.data import durations
from asr_lightning.data.durations import DurationCache, measure_durations
from asr_lightning.data.sources import Utterance
from asr_lightning.errors import AudioDecodeError, EmptyAudioError

RATE = 16_000


def _wav(path: Path, seconds: float, rate: int = RATE) -> Path:
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate)
    return path


def _utt(audio: str | bytes | Path, duration: float | None = None) -> Utterance:
    audio = str(audio) if isinstance(audio, Path) else audio
    return Utterance(id=str(len(audio)), audio=audio, text="A", duration=duration)


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Sources that ``measure_durations`` asked the decoder about, in order."""
    seen: list[object] = []
    real = durations.audio_duration

    def counting(source, **kwargs):
        seen.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(durations, "audio_duration", counting)
    return seen


def test_measures_paths_and_bytes_and_trusts_stated_durations(
    tmp_path: Path, count_reads: list[object]
) -> None:
    a = _wav(tmp_path / "a.wav", 1.5)
    b = _wav(tmp_path / "b.flac", 0.25, rate=8000)
    utts = [_utt(a), _utt(b.read_bytes()), _utt(a, duration=9.0), _utt(a)]
    assert measure_durations(utts) == [1.5, 0.25, 9.0, 1.5]
    assert len(count_reads) == 2  # a.wav once (listed twice), the bytes once
    assert measure_durations(utts, verify=True)[2] == 1.5


def test_failures_are_returned_not_raised(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"this is not audio" * 100)
    missing, empty, junk = measure_durations(
        [_utt(tmp_path / "missing.wav"), _utt(tmp_path / "empty.wav"), _utt(tmp_path / "junk.wav")],
        backends=("soundfile",),
    )
    assert isinstance(missing, AudioDecodeError) and missing.reason == "file not found"
    assert isinstance(empty, EmptyAudioError)
    assert isinstance(junk, AudioDecodeError) and junk.source == str(tmp_path / "junk.wav")


def test_cache_hit_skips_the_decoder_and_survives_reopening(
    tmp_path: Path, count_reads: list[object]
) -> None:
    utts = [_utt(_wav(tmp_path / f"{i}.wav", 1.0 + i / 10)) for i in range(3)]
    (tmp_path / "empty.wav").write_bytes(b"")
    utts.append(_utt(tmp_path / "empty.wav"))
    db = tmp_path / "cache" / "durations.sqlite"
    first = measure_durations(utts, DurationCache(db))
    assert len(count_reads) == 4
    with DurationCache(db) as reopened:  # a later run, or another DDP rank
        again = measure_durations(utts, reopened)
        assert len(reopened) == 4
    assert len(count_reads) == 4  # nothing measured the second time
    assert again[:3] == first[:3] == [1.0, 1.1, 1.2]
    assert isinstance(again[3], EmptyAudioError)  # failures are cached with their type
    assert again[3].reasons == first[3].reasons


def test_changed_file_is_measured_again(tmp_path: Path, count_reads: list[object]) -> None:
    path = _wav(tmp_path / "a.wav", 1.0)
    cache = DurationCache(tmp_path / "c.sqlite")
    assert measure_durations([_utt(path)], cache) == [1.0]
    _wav(path, 2.0)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # coarse mtime clocks
    assert measure_durations([_utt(path)], cache) == [2.0]
    assert len(count_reads) == 2
    assert cache.get(path) == 2.0


def test_cache_is_picklable_and_shared_between_connections(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    files = [_wav(tmp_path / f"{i}.wav", 0.5) for i in range(40)]
    clone = pickle.loads(pickle.dumps(DurationCache(db)))

    def writer(cache: DurationCache, paths: list[Path]) -> None:
        for path in paths:
            cache.put(path, 0.5)
        cache.close()

    threads = [
        threading.Thread(target=writer, args=(DurationCache(db), files[0::2])),
        threading.Thread(target=writer, args=(clone, files[1::2])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(DurationCache(db)) == 40


def test_in_memory_cache(tmp_path: Path, count_reads: list[object]) -> None:
    cache = DurationCache(None)
    utts = [_utt(_wav(tmp_path / "a.wav", 0.75))]
    assert measure_durations(utts, cache) == measure_durations(utts, cache) == [0.75]
    assert len(count_reads) == 1


def test_many_files_are_measured_in_chunks(tmp_path: Path) -> None:
    # More files than one chunk: results stay in order and all reach the cache.
    templates = [_wav(tmp_path / f"t{k}.wav", (k + 1) / 10, rate=8000) for k in range(7)]
    files = [tmp_path / f"{i}.wav" for i in range(1100)]
    for i, path in enumerate(files):
        path.write_bytes(templates[i % 7].read_bytes())
    cache = DurationCache(tmp_path / "c.sqlite")
    measured = measure_durations([_utt(f) for f in files], cache, workers=2)
    assert measured == [pytest.approx((i % 7 + 1) / 10) for i in range(1100)]
    assert len(cache) == 1100
