"""ASRDataset: decoding, skipped items, and the decoded-audio cache on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from torch.utils.data import DataLoader

import asr_lightning.data.dataset as dataset_module
from asr_lightning.audio.augment import AugmentConfig, Augmenter
from asr_lightning.data.audio_cache import DecodedAudio
from asr_lightning.data.dataset import ASRDataset, Example, Item, Skipped

RATE = 16_000
#: No librosa: its audioread fallback warns on the broken file.
BACKENDS = ("soundfile", "ffmpeg")


def _labels(text: str) -> list[int]:
    return [ord(c) - 96 for c in text]


def _write(path: Path, seconds: float, rate: int = RATE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    samples = 0.1 * rng.standard_normal(int(seconds * rate)).astype(np.float32)
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.fixture()
def items(tmp_path: Path, shared_data: Path) -> list[Item]:
    """AN4 speech (SPHERE), a 44.1 kHz WAV (resampled), a broken file and a missing one."""
    an4 = sorted((shared_data / "an4" / "wav" / "an4_clstk").glob("*/*.sph"))[:2]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    return [
        Item("an4-0", str(an4[0]), "abc", 1.0),
        Item("hifi", str(_write(tmp_path / "hifi.wav", 1.3, rate=44_100)), "ab", 1.3),
        Item("broken", str(broken), "a", 1.0),
        Item("an4-1", str(an4[1]), "cab", 1.0),
        Item("missing", str(tmp_path / "nope.wav"), "b", 1.0),
    ]


def test_cached_items_equal_decoded_items(items: list[Item]) -> None:
    plain = ASRDataset(items, _labels, level="rms", backends=BACKENDS)
    cached = ASRDataset(items, _labels, level="rms", backends=BACKENDS, cache_audio=True)
    assert cached.cache is not None and len(cached.cache) == len(items)
    for index in range(len(items)):
        expected, got = plain[index], cached[(index, 3)]
        assert type(got) is type(expected)
        if isinstance(expected, Skipped):
            assert got == expected  # same id and the same reason, counted the same way
        else:
            assert isinstance(got, Example)
            np.testing.assert_array_equal(got.audio, expected.audio)
            assert (got.id, got.labels, got.text) == (expected.id, expected.labels, expected.text)
    assert {i for i, item in enumerate(items) if item.id in ("broken", "missing")} == set(
        cached.cache.failures
    )


def test_cache_decodes_each_file_once(items: list[Item], monkeypatch) -> None:
    calls: list[str] = []
    real = dataset_module.load_audio

    def counting(source, *args, **kwargs):
        calls.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "load_audio", counting)
    dataset = ASRDataset(items, _labels, backends=BACKENDS, cache_audio=True)
    assert sorted(calls) == sorted(item.audio for item in items)
    calls.clear()
    loader = DataLoader(dataset, batch_size=2, collate_fn=list)
    for _epoch in range(2):
        skipped = [x for batch in loader for x in batch if isinstance(x, Skipped)]
        assert [x.id for x in skipped] == ["broken", "missing"]
    assert calls == []


def test_each_example_carries_the_seed_of_its_random_draws(items: list[Item]) -> None:
    """``(data seed, epoch, index)``: the collator's SpecAugment masks draw from it."""
    dataset = ASRDataset(items, _labels, backends=BACKENDS, seed=42)
    assert dataset[(3, 5)].seed == (42, 5, 3)
    assert dataset[0].seed == (42, 0, 0)


def test_cache_keeps_augmentation_per_epoch_and_is_not_written(items: list[Item]) -> None:
    augment = Augmenter(AugmentConfig(speed_prob=0.0, gain_prob=1.0), seed=1)
    plain = ASRDataset(items, _labels, augmenter=augment, backends=BACKENDS)
    cached = ASRDataset(items, _labels, augmenter=augment, backends=BACKENDS, cache_audio=True)
    epoch0, epoch1 = cached[(0, 0)], cached[(0, 1)]
    assert not np.array_equal(epoch0.audio, epoch1.audio)  # a new gain every epoch
    np.testing.assert_array_equal(epoch1.audio, plain[(0, 1)].audio)
    epoch0.audio[:] = 0.0  # the consumer owns its copy
    np.testing.assert_array_equal(cached[(0, 0)].audio, plain[(0, 0)].audio)


def test_decoded_audio_offsets_and_failures() -> None:
    pieces = {0: np.ones(3, np.float32), 1: "decode failed: bad", 2: np.arange(2, dtype=np.int16)}
    cache = DecodedAudio.build(3, pieces.__getitem__, threads=2)
    assert cache.offsets.tolist() == [0, 3, 3, 5]
    assert cache.get(1) == "decode failed: bad"
    np.testing.assert_array_equal(cache.get(2), [0.0, 1.0])
    assert cache.get(2).dtype == np.float32
    with pytest.raises(ValueError, match="offsets"):
        DecodedAudio(np.zeros(4, np.float32), np.array([0, 3]), {})


def _uss_mb(pid: int) -> float:
    psutil = pytest.importorskip("psutil")
    return psutil.Process(pid).memory_full_info().uss / 1e6


def test_forked_workers_share_the_cache_and_do_not_grow(tmp_path: Path) -> None:
    """Two workers over three epochs: neither copies the ~100 MB buffer, neither grows."""
    psutil = pytest.importorskip("psutil")
    clip = str(_write(tmp_path / "long.wav", 20.0))
    items = [Item(f"u{i}", clip, "ab", 20.0) for i in range(80)]  # 80 x 1.28 MB decoded
    dataset = ASRDataset(items, _labels, level="rms", cache_audio=True)
    buffer_mb = dataset.cache.nbytes / 1e6
    assert buffer_mb > 100
    loader = DataLoader(
        dataset, batch_size=8, num_workers=2, persistent_workers=True, collate_fn=len
    )
    workers_uss = []
    for _epoch in range(3):
        assert sum(loader) == len(items)
        workers = psutil.Process().children()
        assert len(workers) == 2
        workers_uss.append([_uss_mb(worker.pid) for worker in workers])
    first, last = workers_uss[0], workers_uss[-1]
    for worker_first, worker_last in zip(first, last, strict=True):
        assert worker_last < buffer_mb / 2, workers_uss  # private memory: no copy of the cache
        assert worker_last - worker_first < 8, workers_uss  # no growth across epochs


def test_examples_and_skipped_items_keep_speaker_file_and_known_duration(items: list[Item]):
    spoken = [Item(i.id, i.audio, i.text, i.duration, speaker=f"spk-{i.id}") for i in items]
    dataset = ASRDataset(spoken, _labels, backends=BACKENDS)
    first, broken = dataset[0], dataset[2]
    assert isinstance(first, Example) and isinstance(broken, Skipped)
    assert (first.speaker, first.audio_path) == ("spk-an4-0", items[0].audio)
    assert (broken.speaker, broken.audio_path, broken.duration) == (
        "spk-broken",
        items[2].audio,
        1.0,
    )
    unmeasured = ASRDataset([Item("u", b"RIFF", "a", 0.0, "decode failed: x")], _labels)[0]
    assert unmeasured.audio_path is None and unmeasured.duration is None  # bytes, no duration
