"""A lean log-mel front end for inference: ``ParakeetFeatureExtractor``'s numbers, less overhead.

``ParakeetFeatureExtractor.__call__`` converts every clip to a tensor, pads through the generic
``SequenceFeatureExtractor.pad`` and builds a ``BatchFeature`` twice; on short clips this
bookkeeping costs more than the STFT itself, and it squares the spectrum's magnitude through a
strided sum. On the AN4 test clips one at a time it takes about twice the time of
:class:`LogMelFrontEnd` (``benchmarks/inference_speed.py`` prints both). This class computes the same features (pre-emphasis, centred STFT with a
symmetric Hann window, power spectrum, Slaney mel filter bank, log, per-utterance mean/variance
normalisation over the valid frames) straight from a padded numpy batch. Training keeps the
Hugging Face extractor; a test holds the two to the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from asr_lightning.inference.models import extract_features

#: ``ParakeetFeatureExtractor``'s floor under the mel energies before the log.
LOG_ZERO_GUARD = 2.0**-24
#: ``ParakeetFeatureExtractor``'s guard added to the standard deviation.
STD_EPSILON = 1e-5

FeatureFunction = Callable[[Sequence[np.ndarray]], dict[str, np.ndarray]]


def has_log_mel_front_end(feature_extractor: Any) -> bool:
    """Whether :class:`LogMelFrontEnd` reproduces this feature extractor."""
    return type(feature_extractor).__name__ == "ParakeetFeatureExtractor"


def feature_function(feature_extractor: Any) -> FeatureFunction:
    """``audios -> {"inputs", "attention_mask"}`` for a model's feature extractor.

    :class:`LogMelFrontEnd` for Parakeet-style log-mel extractors, else
    :func:`asr_lightning.inference.models.extract_features` (waveform models only normalise).
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
        self.win_length = int(feature_extractor.win_length)
        self.preemphasis = float(feature_extractor.preemphasis or 0.0)
        self.window = torch.hann_window(self.win_length, periodic=False)
        self.mel = torch.as_tensor(np.asarray(feature_extractor.mel_filters, dtype=np.float32))

    def __call__(self, audios: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        lengths = np.array([audio.size for audio in audios], dtype=np.int64)
        padded = np.zeros((len(audios), int(lengths.max(initial=1))), dtype=np.float32)
        for row, audio in enumerate(audios):
            padded[row, : audio.size] = audio
        with torch.inference_mode():
            features, mask = self.features(torch.from_numpy(padded), torch.from_numpy(lengths))
        return {"inputs": features.numpy(), "attention_mask": mask.numpy()}

    def features(
        self, audio: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            audio: ``(B, S)`` float32 samples, zero-padded.
            lengths: ``(B,)`` int64 true sample counts.

        Returns:
            ``(B, T, F)`` normalised log-mel frames (zero on padding) and the ``(B, T)`` int64
            mask of valid frames, ``T = S // hop + 1``.
        """
        if self.preemphasis:
            emphasised = audio[:, 1:] - self.preemphasis * audio[:, :-1]
            audio = torch.cat([audio[:, :1], emphasised], dim=1)
            audio = audio * (torch.arange(audio.shape[1])[None, :] < lengths[:, None])
        spectrum = torch.stft(
            audio,
            self.n_fft,
            hop_length=self.hop,
            win_length=self.win_length,
            window=self.window,
            return_complex=True,
            pad_mode="constant",
        )
        power = spectrum.real.square() + spectrum.imag.square()  # (B, bins, T)
        log_mel = torch.log(torch.matmul(self.mel, power) + LOG_ZERO_GUARD)  # (B, F, T)
        frames = torch.div(lengths, self.hop, rounding_mode="floor")  # valid frames per row
        valid = torch.arange(log_mel.shape[-1])[None, :] < frames[:, None]  # (B, T)
        weight = valid.unsqueeze(1).to(log_mel.dtype)  # (B, 1, T)
        count = frames.to(log_mel.dtype)[:, None, None]
        mean = (log_mel * weight).sum(-1, keepdim=True) / count
        centred = (log_mel - mean) * weight
        std = torch.sqrt(centred.square().sum(-1, keepdim=True) / (count - 1))
        features = (centred / (std + STD_EPSILON)).transpose(1, 2).contiguous()  # (B, T, F)
        return features, valid.to(torch.int64)
