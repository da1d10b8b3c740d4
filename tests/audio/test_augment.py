from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import soundfile as sf

from asr_lightning.audio.augment import (
    AugmentConfig,
    Augmenter,
    add_noise,
    normalize_level,
    speed_perturb,
)
from asr_lightning.errors import ConfigError

SR = 16_000
OFF = {"noise_prob": 0.0, "gain_prob": 0.0, "speed_prob": 0.0}


def _speech_like(seconds: float = 1.0, amplitude: float = 0.05, seed: int = 0) -> np.ndarray:
    """A quiet (AN4-like) 220 Hz tone with a little noise: (n,) float32."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = amplitude * np.sin(2 * np.pi * 220 * t) + 0.002 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture()
def noise_dir(tmp_path):
    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    sf.write(folder / "white.wav", 0.1 * rng.standard_normal(SR // 4), SR)  # shorter: loops
    sf.write(folder / "sub" / "brown.FLAC", 0.05 * np.cumsum(rng.standard_normal(3 * SR)) / 50, SR)
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_same_generator_seed_same_output(noise_dir):
    config = AugmentConfig(noise_dir=str(noise_dir), noise_prob=1.0, gain_prob=1.0)
    augmenter = Augmenter(config, seed=7)
    x = _speech_like()
    a = augmenter(x, np.random.default_rng([7, 0, 3]))
    b = Augmenter(config, seed=7)(x, augmenter.generator(epoch=0, index=3))
    assert np.array_equal(a, b)
    c = augmenter(x, augmenter.generator(epoch=1, index=3))
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_noise_is_added_at_the_drawn_snr(noise_dir):
    x = _speech_like()
    for snr in (0.0, 10.0, 20.0):
        config = AugmentConfig(
            noise_dir=str(noise_dir), snr_db=(snr, snr), **OFF | {"noise_prob": 1}
        )
        augmenter = Augmenter(config)
        for seed in range(4):  # both files, several offsets
            y = augmenter(x, np.random.default_rng(seed))
            added = y.astype(np.float64) - x
            measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(added**2))
            assert measured == pytest.approx(snr, abs=0.1)


def test_add_noise_leaves_silence_alone():
    silence = np.zeros(100, np.float32)
    noise = np.ones(100, np.float32)
    assert np.array_equal(add_noise(silence, noise, 10.0), silence)
    with pytest.raises(ValueError, match="shape"):
        add_noise(silence, noise[:10], 10.0)


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.5])
def test_speed_factor_changes_length_by_the_factor(factor):
    x = _speech_like()
    augmenter = Augmenter(AugmentConfig(speed_factors=(factor,), **OFF | {"speed_prob": 1}))
    y = augmenter(x, np.random.default_rng(0))
    assert abs(y.size - x.size / factor) <= 2
    assert np.array_equal(speed_perturb(x, 1.0), x)


def test_speed_perturbation_shifts_pitch():
    x = _speech_like(amplitude=0.5)
    y = speed_perturb(x, 1.1)
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * SR / y.size
    assert peak_hz == pytest.approx(220 * 1.1, abs=3)


def test_gain_within_range():
    x = _speech_like()
    augmenter = Augmenter(AugmentConfig(gain_db=(-6, 6), **OFF | {"gain_prob": 1}))
    for seed in range(10):
        y = augmenter(x, np.random.default_rng(seed))
        gain_db = 20 * np.log10(np.max(np.abs(y)) / np.max(np.abs(x)))
        assert -6.01 <= gain_db <= 6.01


def test_output_is_finite_float32_in_range(noise_dir):
    config = AugmentConfig(
        noise_dir=str(noise_dir), snr_db=(-5, 0), noise_prob=1, gain_db=(20, 30), gain_prob=1
    )
    augmenter = Augmenter(config)
    loud = np.clip(_speech_like(amplitude=0.9) * 2, -1, 1)
    for x in (loud, np.zeros(SR, np.float32), np.zeros(0, np.float32), loud.astype(np.float64)):
        y = augmenter(x, np.random.default_rng(0))
        assert y.dtype == np.float32 and np.isfinite(y).all()
        assert np.abs(y).max(initial=0) <= 1.0
    broken = loud.copy()
    broken[::100] = np.nan
    assert np.isfinite(augmenter(broken, np.random.default_rng(0))).all()


def test_all_off_is_identity():
    x = _speech_like()
    assert np.array_equal(Augmenter(AugmentConfig(**OFF))(x, np.random.default_rng(0)), x)


def test_empty_or_missing_noise_folder_is_a_config_error(tmp_path):
    empty = tmp_path / "empty_noise"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    with pytest.raises(ConfigError, match="empty_noise.*no audio files"):
        Augmenter(AugmentConfig(noise_dir=str(empty)))
    with pytest.raises(ConfigError, match="missing_noise.*not a folder"):
        Augmenter(AugmentConfig(noise_dir=str(tmp_path / "missing_noise")))


def test_undecodable_noise_files_are_skipped_with_a_warning(noise_dir, caplog):
    (noise_dir / "broken.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(noise_dir / "silent.wav", np.zeros(SR // 10), SR)
    config = AugmentConfig(noise_dir=str(noise_dir), **OFF | {"noise_prob": 1})
    augmenter = Augmenter(config)
    with caplog.at_level(logging.WARNING, logger="asr_lightning.audio.augment"):
        outputs = [augmenter(_speech_like(), np.random.default_rng(s)) for s in range(20)]
    assert all(np.isfinite(y).all() for y in outputs)
    assert "broken.wav" in caplog.text and "silent.wav" in caplog.text
    only_bad = noise_dir / "sub"
    for path in (noise_dir / "sub").iterdir():
        path.unlink()
    (only_bad / "broken.ogg").write_bytes(b"OggS junk")
    augmenter = Augmenter(AugmentConfig(noise_dir=str(only_bad), **OFF | {"noise_prob": 1}))
    with pytest.raises(ConfigError, match="could be decoded"):
        augmenter(_speech_like(), np.random.default_rng(0))


def test_noise_cache_is_not_pickled(noise_dir):
    config = AugmentConfig(noise_dir=str(noise_dir), **OFF | {"noise_prob": 1})
    augmenter = Augmenter(config, seed=3)
    x = _speech_like()
    first = augmenter(x, np.random.default_rng(0))
    assert augmenter._noise_cache
    clone = pickle.loads(pickle.dumps(augmenter))
    assert clone._noise_cache == {}
    assert np.array_equal(clone(x, np.random.default_rng(0)), first)


@pytest.mark.parametrize(
    "bad",
    [
        {"snr_db": (20.0, 5.0)},
        {"gain_prob": 1.5},
        {"speed_factors": ()},
        {"speed_factors": (0.0, 1.0)},
    ],
)
def test_invalid_config_raises(bad):
    with pytest.raises(ConfigError):
        AugmentConfig(**bad)


def test_normalize_level_peak_and_rms():
    x = _speech_like(amplitude=0.02)
    peak = normalize_level(x, "peak", -6.0)
    assert 20 * np.log10(np.abs(peak).max()) == pytest.approx(-6.0, abs=1e-3)
    assert normalize_level(x, "peak").max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    rms = normalize_level(x, "rms", -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(rms.astype(np.float64) ** 2))) == pytest.approx(
        -20, abs=0.01
    )
    assert rms.dtype == np.float32 and np.array_equal(normalize_level(x, "none"), x)


def test_normalize_level_never_clips_and_leaves_silence():
    spiky = np.zeros(SR, np.float32)
    spiky[100] = 0.5  # tiny RMS, large peak: the RMS gain is capped at peak 1.0
    out = normalize_level(spiky, "rms", -3.0)
    assert np.abs(out).max() == pytest.approx(1.0)
    silence = np.zeros(SR, np.float32)
    assert np.array_equal(normalize_level(silence, "rms"), silence)
    assert normalize_level(np.zeros(0, np.float32), "peak").size == 0
    with pytest.raises(ConfigError, match="mode"):
        normalize_level(spiky, "loudness")  # type: ignore[arg-type]
