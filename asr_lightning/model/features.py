"""Model input from audio, one way for every runtime: feature extraction, level, frame rate.

:func:`feature_function` gives ``audios -> {"inputs", "attention_mask"}`` for a model's feature
extractor: :func:`extract_features` (the Hugging Face extractor) or, for Parakeet-style log-mel
extractors, :class:`LogMelFrontEnd`, which gives ``ParakeetFeatureExtractor``'s numbers with
less overhead:

``ParakeetFeatureExtractor.__call__`` converts every clip to a tensor, pads through the generic
``SequenceFeatureExtractor.pad``, builds a ``BatchFeature`` twice and runs a dense mel GEMM; on
short clips this costs several times the FFT itself. :class:`LogMelFrontEnd` computes the same
features (pre-emphasis, centred STFT with a symmetric Hann window, power spectrum, Slaney mel
filter bank, log, per-utterance mean/variance normalisation over the valid frames) from one
padded numpy batch: numpy frames the audio, torch's FFT transforms it (numpy's took about 3x
as long in a one-off timing), and a sparse product applies the filter bank (each frequency bin
feeds at most two filters). Nothing in it starts a thread pool: numpy's OpenBLAS threads, had a
dense ``@`` woken them, kept spinning beside onnxruntime's (one profile of the AN4 test set, not
repeated, ran 3x slower). ``benchmarks/inference_speed.py`` prints the time of both front ends.
Training keeps the Hugging Face extractor; a test holds the two to the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy.sparse import csr_matrix

from asr_lightning.audio.augment import LEVEL_MODES, LevelMode
from asr_lightning.audio.decode import SAMPLE_RATE
from asr_lightning.data.collate import WAVEFORM_INPUT, CTCCollator
from asr_lightning.data.spec_augment import SpecAugmentOptions
from asr_lightning.errors import ConfigError, ModelError
from asr_lightning.model.ctc import output_lengths

#: Two audio lengths (seconds) whose output frame counts give the frame rate exactly.
_RATE_PROBE_S = (10, 20)
#: Feature extractor attribute (saved in ``preprocessor_config.json``) naming the level
#: normalization training applied before the features (``data.level``), so inference applies it.
LEVEL_ATTRIBUTE = "asr_lightning_level"
#: ``ParakeetFeatureExtractor``'s floor under the mel energies before the log.
LOG_ZERO_GUARD = 2.0**-24
#: ``ParakeetFeatureExtractor``'s guard added to the standard deviation.
STD_EPSILON = 1e-5

FeatureFunction = Callable[[Sequence[np.ndarray]], dict[str, np.ndarray]]


def has_log_mel_front_end(feature_extractor: Any) -> bool:
    """Whether :class:`LogMelFrontEnd` reproduces this feature extractor."""
    return type(feature_extractor).__name__ == "ParakeetFeatureExtractor"


def collator(feature_extractor: Any, spec_augment: SpecAugmentOptions | None = None) -> CTCCollator:
    """The training collator for a model's feature extractor: the same features as inference.

    Args:
        feature_extractor: the model's feature extractor.
        spec_augment: SpecAugment masks for the training split of a filter-bank model; never
            given for evaluation or inference.

    Raises:
        ConfigError: the extractor expects another sampling rate than the data's 16 kHz, or
            ``spec_augment`` is given for a waveform model.
    """
    rate = getattr(feature_extractor, "sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise ConfigError(
            f"the feature extractor expects {rate} Hz audio but items are {SAMPLE_RATE} Hz: "
            "use a 16 kHz model or resample its feature extractor's audio"
        )
    return CTCCollator(
        feature_function(feature_extractor), feature_extractor.model_input_names[0], spec_augment
    )


def feature_function(feature_extractor: Any) -> FeatureFunction:
    """``audios -> {"inputs", "attention_mask"}`` for a model's feature extractor.

    :class:`LogMelFrontEnd` for Parakeet-style log-mel extractors, else
    :func:`extract_features` (waveform models only normalise).
    """
    if has_log_mel_front_end(feature_extractor):
        return LogMelFrontEnd(feature_extractor)
    return partial(extract_features, feature_extractor)


class LogMelFrontEnd:
    """``audios -> {"inputs": (B, T, F) float32, "attention_mask": (B, T) int64}``."""

    def __init__(self, feature_extractor: Any) -> None:
        """
        Args:
            feature_extractor: a ``ParakeetFeatureExtractor`` (its n_fft, hop, window length,
                pre-emphasis and mel filters are used).
        """
        self.n_fft = int(feature_extractor.n_fft)
        self.hop = int(feature_extractor.hop_length)
        win_length = int(feature_extractor.win_length)
        self.preemphasis = np.float32(feature_extractor.preemphasis or 0.0)
        # torch.stft's window: a symmetric Hann window, zero-padded to n_fft around its centre
        self.window = np.zeros(self.n_fft, dtype=np.float32)
        offset = (self.n_fft - win_length) // 2
        hann = torch.hann_window(win_length, periodic=False, dtype=torch.float32).numpy()
        self.window[offset : offset + win_length] = hann
        self.mel = csr_matrix(np.asarray(feature_extractor.mel_filters, dtype=np.float32))

    def __call__(self, audios: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        lengths = np.array([audio.size for audio in audios], dtype=np.int64)
        samples = int(lengths.max(initial=1))
        frames = samples // self.hop + 1
        half = self.n_fft // 2  # the centred STFT's zero padding on both sides
        padded = np.zeros((len(audios), half + samples + half), np.float32)
        for row, audio in enumerate(audios):
            self._emphasise(np.asarray(audio, dtype=np.float32), padded[row, half:])
        windows = sliding_window_view(padded, self.n_fft, axis=1)[:, :: self.hop][:, :frames]
        with torch.inference_mode():  # torch's FFT is ~3x numpy's here
            spectrum = torch.fft.rfft(torch.from_numpy(windows * self.window)).numpy()
        power = np.square(spectrum.real) + np.square(spectrum.imag)  # (B, T, bins)
        # A sparse product: each bin feeds at most two filters (Parakeet's 80 x 257 bank has 500
        # non-zero weights of 20,560), and no OpenBLAS threads are left spinning.
        mel = (self.mel @ power.reshape(-1, power.shape[-1]).T).T.reshape(len(audios), frames, -1)
        log_mel = np.log(mel + np.float32(LOG_ZERO_GUARD))  # (B, T, F)
        valid_frames = lengths // self.hop
        valid = np.arange(frames)[None, :] < valid_frames[:, None]  # (B, T)
        weight = valid[:, :, None].astype(np.float32)
        count = valid_frames.astype(np.float32)[:, None, None]
        mean = (log_mel * weight).sum(axis=1, keepdims=True) / count
        centred = (log_mel - mean) * weight
        std = np.sqrt(np.square(centred).sum(axis=1, keepdims=True) / (count - 1))
        features = np.ascontiguousarray(centred / (std + np.float32(STD_EPSILON)))
        return {"inputs": features, "attention_mask": valid.astype(np.int64)}

    def _emphasise(self, audio: np.ndarray, out: np.ndarray) -> None:
        """``out[:n] = audio`` with pre-emphasis (the first sample kept as it is)."""
        if audio.size == 0:
            return
        out[0] = audio[0]
        if self.preemphasis:
            np.subtract(audio[1:], self.preemphasis * audio[:-1], out=out[1 : audio.size])
        else:
            out[1 : audio.size] = audio[1:]


def extract_features(feature_extractor: Any, audios: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Padded model input and attention mask of a batch of 16 kHz clips, as numpy arrays.

    The same call as the training collator, so inference sees what training saw.

    Returns:
        ``{"inputs": (B, T), (B, 1, T) or (B, T, F) float32, "attention_mask": (B, T) int64}``.
    """
    name = feature_extractor.model_input_names[0]
    features = feature_extractor(
        audios,
        sampling_rate=SAMPLE_RATE,
        padding=True,
        return_attention_mask=True,
        return_tensors="pt",  # OmniASR's extractor supports no other
    )
    inputs = features[name].to(torch.float32).numpy()
    if name == WAVEFORM_INPUT:  # (B, [1,] T) samples: the mask follows the true sample counts
        lengths = np.array([len(audio) for audio in audios])
        mask = (np.arange(inputs.shape[-1])[None, :] < lengths[:, None]).astype(np.int64)
    else:
        mask = features["attention_mask"].to(torch.int64).numpy()
    return {"inputs": inputs, "attention_mask": mask}


def input_level(feature_extractor: Any) -> LevelMode:
    """The level normalization a model was trained with (``"none"`` for other models)."""
    level = getattr(feature_extractor, LEVEL_ATTRIBUTE, "none")
    if level not in LEVEL_MODES:
        raise ModelError(
            f"the feature extractor's {LEVEL_ATTRIBUTE} is {level!r}, not one of {LEVEL_MODES}: "
            "fix preprocessor_config.json"
        )
    return level


def samples_per_frame(model: Any, feature_extractor: Any) -> int:
    """Audio samples per CTC output frame (320 for wav2vec2, hop x subsampling for Parakeet).

    Measured from the output lengths of two silent inputs, so it holds for any family whose
    lengths :func:`asr_lightning.model.ctc.output_lengths` knows, without running the model.
    """
    frames = []
    for seconds in _RATE_PROBE_S:
        features = extract_features(feature_extractor, [np.zeros(seconds * SAMPLE_RATE, "f4")])
        mask = torch.from_numpy(features["attention_mask"])
        batch = {"attention_mask": mask, "input_lengths": mask.sum(-1)}
        frames.append(int(output_lengths(model, batch)[0]))
    extra_samples = (_RATE_PROBE_S[1] - _RATE_PROBE_S[0]) * SAMPLE_RATE
    return round(extra_samples / (frames[1] - frames[0]))
