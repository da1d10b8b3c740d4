"""One small error hierarchy.

Every error a user can cause is an :class:`AsrLightningError` whose message says what was wrong
and how to fix it. Library errors are chained with ``raise ... from err`` so the cause stays
visible without being the first thing a user reads.
"""

from __future__ import annotations

from collections.abc import Mapping


class AsrLightningError(Exception):
    """Base class of every error asr-lightning raises on purpose."""


class ConfigError(AsrLightningError, ValueError):
    """An argument or configuration value is invalid."""


class AudioDecodeError(AsrLightningError):
    """Audio could not be turned into samples.

    ``reasons`` maps each backend that was tried to why it failed, so one message shows them all.
    """

    def __init__(self, source: str, reasons: Mapping[str, str], hint: str = "") -> None:
        self.source = source
        self.reasons = dict(reasons)
        lines = [f"could not decode audio {source!r}:"]
        lines += [f"  - {backend}: {reason}" for backend, reason in self.reasons.items()]
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))

    @property
    def reason(self) -> str:
        """A short one-line reason suitable for grouping failures in a report."""
        if not self.reasons:
            return "undecodable"
        return next(iter(self.reasons.values())).splitlines()[0]


class EmptyAudioError(AudioDecodeError):
    """The audio decoded to zero samples."""


class NonFiniteAudioError(AudioDecodeError):
    """The decoded audio holds NaN or infinite samples."""


class DataSourceError(AsrLightningError):
    """A dataset source (manifest, Common Voice folder, HF dataset) is missing or malformed."""


class VocabularyError(AsrLightningError):
    """Transcripts and the model's vocabulary do not fit together."""


class ModelError(AsrLightningError):
    """A model or checkpoint cannot be loaded or used as asked."""


class CheckpointMismatchError(ModelError):
    """Checkpoints to average hold different tensors or were trained for different models."""
