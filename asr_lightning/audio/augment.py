"""Waveform augmentation for training, and level normalization for every split.

:class:`Augmenter` draws every random choice from a generator it is handed, so the dataset can
derive one per item and epoch (``np.random.default_rng([seed, epoch, index])``) and the same
item augments the same way whatever the number of DataLoader workers. The steps, in order:
speed perturbation (resampling, which changes duration and pitch like Kaldi's speed perturb),
additive noise at a random SNR, random gain; the result is float32, finite and within [-1, 1].

:func:`normalize_level` is separate and pure: apply it at training AND evaluation time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soxr

from asr_lightning.audio.decode import SAMPLE_RATE, load_audio
from asr_lightning.errors import AudioDecodeError, ConfigError

logger = logging.getLogger(__name__)

LevelMode = Literal["none", "peak", "rms"]
LEVEL_MODES: tuple[LevelMode, ...] = ("none", "peak", "rms")
#: Default targets of :func:`normalize_level`, in dB relative to full scale.
DEFAULT_PEAK_DBFS = -1.0
DEFAULT_RMS_DBFS = -20.0
#: Audio quieter than this is digital silence: amplifying it would only raise the noise floor.
SILENCE_DBFS = -90.0
#: File endings looked for in ``AugmentConfig.noise_dir`` (any case, in subfolders too).
NOISE_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".sph", ".aif", ".aiff"}
)
#: soxr quality for speed perturbation: "HQ" is transparent and still fast.
SPEED_QUALITY = "HQ"


def _db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0


def _finite_clipped(samples: np.ndarray) -> np.ndarray:
    """float32, NaN to 0, clipped to [-1, 1]."""
    out = np.nan_to_num(np.asarray(samples, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def normalize_level(
    samples: np.ndarray, mode: LevelMode = "rms", target_db: float | None = None
) -> np.ndarray:
    """Scale audio to a peak or RMS level; quiet recordings (such as AN4's) become comparable.

    RMS normalization never clips: its gain is capped so that the peak stays at most 1.0.
    Silence (below :data:`SILENCE_DBFS`) is returned unscaled.

    Args:
        samples: (n,) mono audio in [-1, 1].
        mode: ``"peak"`` (largest absolute sample), ``"rms"`` (root mean square) or ``"none"``.
        target_db: the level to reach in dBFS; default -1 for "peak", -20 for "rms".

    Returns:
        (n,) float32 audio.
    """
    if mode not in LEVEL_MODES:
        raise ConfigError(f"level normalization mode must be one of {LEVEL_MODES}, got {mode!r}")
    samples = np.asarray(samples, dtype=np.float32)
    if mode == "none" or samples.size == 0:
        return samples
    peak = float(np.max(np.abs(samples)))
    level = peak if mode == "peak" else _rms(samples)
    if not np.isfinite(level) or level <= _db_to_amplitude(SILENCE_DBFS):
        return samples
    default = DEFAULT_PEAK_DBFS if mode == "peak" else DEFAULT_RMS_DBFS
    gain = _db_to_amplitude(default if target_db is None else target_db) / level
    gain = min(gain, 1.0 / peak)
    # a finite level means finite samples (a NaN or inf one makes peak and RMS non-finite), so
    # only rounding can push a sample past 1.0
    scaled = samples * np.float32(gain)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def add_noise(samples: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``samples`` plus ``noise`` scaled to a signal-to-noise ratio (power ratio, in dB).

    Args:
        samples: (n,) clean audio.
        noise: (n,) noise, already cut to the length of ``samples``.
        snr_db: wanted ratio of the powers of ``samples`` and of the added noise, in dB.

    Returns:
        (n,) float32 mix, not clipped; ``samples`` unchanged when either part is silent.
    """
    if samples.shape != noise.shape:
        raise ValueError(
            f"noise must have the shape of samples, {samples.shape}, not {noise.shape}"
        )
    signal_rms, noise_rms = _rms(samples), _rms(noise)
    if signal_rms == 0.0 or noise_rms == 0.0:
        return samples.astype(np.float32, copy=False)
    scale = signal_rms / (noise_rms * _db_to_amplitude(snr_db))
    return (samples + scale * noise).astype(np.float32)


def speed_perturb(samples: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Play audio ``factor`` times faster: ``len / factor`` samples, pitch shifted alike.

    Args:
        samples: (n,) mono audio.
        factor: speed factor, e.g. 0.9 (slower, longer) or 1.1 (faster, shorter).
        sample_rate: rate of ``samples``; only the ratio matters to the resampler.
    """
    if factor == 1.0 or samples.size == 0:
        return samples
    return soxr.resample(samples, sample_rate * factor, sample_rate, quality=SPEED_QUALITY)


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    if len(bounds) != 2 or not bounds[0] <= bounds[1]:
        raise ConfigError(f"{name} must be a (low, high) pair with low <= high, got {bounds!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time waveform augmentation; a probability of 0 turns a step off."""

    noise_dir: str | None = None
    """Folder of noise recordings (wav, flac, ogg, mp3...; subfolders too); None: no noise."""
    snr_db: tuple[float, float] = (5.0, 20.0)
    """Signal-to-noise ratio range in dB, drawn uniformly."""
    noise_prob: float = 0.5
    """Probability of adding noise to an utterance (when noise_dir is set)."""
    gain_db: tuple[float, float] = (-6.0, 6.0)
    """Gain range in dB, drawn uniformly."""
    gain_prob: float = 0.5
    """Probability of changing the gain of an utterance."""
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    """Speed factors, one drawn uniformly (Kaldi's speed perturbation uses 0.9, 1.0, 1.1)."""
    speed_prob: float = 1.0
    """Probability of drawing a speed factor at all (otherwise the speed stays 1.0)."""

    def __post_init__(self) -> None:
        _check_range("snr_db", self.snr_db)
        _check_range("gain_db", self.gain_db)
        for name in ("noise_prob", "gain_prob", "speed_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not self.speed_factors or any(not 0.0 < f <= 10.0 for f in self.speed_factors):
            raise ConfigError(
                f"speed_factors must be positive factors such as (0.9, 1.0, 1.1), "
                f"got {self.speed_factors!r}"
            )


def list_noise_files(noise_dir: str | Path) -> list[Path]:
    """The audio files under ``noise_dir`` (recursively), sorted so that draws are reproducible.

    Raises:
        ConfigError: the folder is missing or holds no audio file.
    """
    folder = Path(noise_dir)
    if not folder.is_dir():
        raise ConfigError(
            f"noise_dir {str(folder)!r} is not a folder; fix the path or set it to null"
        )
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in NOISE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise ConfigError(
            f"noise_dir {str(folder)!r} holds no audio files (looked for "
            f"{', '.join(sorted(NOISE_EXTENSIONS))}); add noise recordings or set it to null"
        )
    return files


class Augmenter:
    """Applies an :class:`AugmentConfig` to training audio with a caller-supplied generator.

    Noise files are listed when it is built (so a bad ``noise_dir`` fails early) and decoded on
    first use, then cached for the life of the process (each DataLoader worker has its own).
    """

    def __init__(self, config: AugmentConfig, seed: int = 0, sample_rate: int = SAMPLE_RATE):
        """
        Args:
            config: which augmentations to apply, how often and how strongly.
            seed: base seed of :meth:`generator`.
            sample_rate: rate of the audio to augment and of the decoded noise.
        """
        self.config = config
        self.seed = seed
        self.sample_rate = sample_rate
        self._noise_files = list_noise_files(config.noise_dir) if config.noise_dir else []
        self._noise_cache: dict[Path, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Workers decode the noise themselves rather than receive a pickled copy of the cache.
        return {**self.__dict__, "_noise_cache": {}}

    def generator(self, epoch: int, index: int) -> np.random.Generator:
        """The generator for one item in one epoch: the same whatever the worker."""
        return np.random.default_rng([self.seed, epoch, index])

    def __call__(self, samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one utterance.

        Args:
            samples: (n,) float mono audio at ``sample_rate``.
            rng: the source of every random choice, e.g. :meth:`generator`.

        Returns:
            (m,) float32 audio in [-1, 1]; m differs from n under speed perturbation.
        """
        cfg = self.config
        out = np.asarray(samples, dtype=np.float32)
        if cfg.speed_prob > 0 and rng.random() < cfg.speed_prob:
            factor = float(cfg.speed_factors[rng.integers(len(cfg.speed_factors))])
            out = speed_perturb(out, factor, self.sample_rate)
        if self._noise_files and cfg.noise_prob > 0 and rng.random() < cfg.noise_prob:
            noise = self._noise_for(out.size, rng)
            if noise is not None:
                out = add_noise(out, noise, float(rng.uniform(*cfg.snr_db)))
        if cfg.gain_prob > 0 and rng.random() < cfg.gain_prob:
            out = out * _db_to_amplitude(float(rng.uniform(*cfg.gain_db)))
        return _finite_clipped(out)

    def _noise_for(self, length: int, rng: np.random.Generator) -> np.ndarray | None:
        """``length`` samples of a random noise file from a random offset, looped if short."""
        if length == 0:
            return None
        while self._noise_files:
            path = self._noise_files[rng.integers(len(self._noise_files))]
            noise = self._load_noise(path)
            if noise is not None:
                start = int(rng.integers(noise.size))
                return noise[(start + np.arange(length)) % noise.size]
        raise ConfigError(
            f"no noise file in noise_dir {self.config.noise_dir!r} could be decoded; "
            "see the warnings above, or set noise_dir to null"
        )

    def _load_noise(self, path: Path) -> np.ndarray | None:
        """Decoded noise, cached; a file that fails is warned about once and never drawn again."""
        if path in self._noise_cache:
            return self._noise_cache[path]
        try:
            noise = load_audio(path, sample_rate=self.sample_rate)
        except AudioDecodeError as err:
            reason = err.reason
        else:
            if _rms(noise) > 0.0:
                self._noise_cache[path] = noise
                return noise
            reason = "silent"
        logger.warning("noise file %s is not used: %s", path, reason)
        self._noise_files.remove(path)
        return None
