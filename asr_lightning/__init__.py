"""asr-lightning: train, evaluate, export and deploy CTC speech recognition models."""

from asr_lightning.errors import (
    AsrLightningError,
    AudioDecodeError,
    ConfigError,
    DataSourceError,
    EmptyAudioError,
    ModelError,
    NonFiniteAudioError,
    VocabularyError,
)

__version__ = "0.1.0"

__all__ = [
    "AsrLightningError",
    "AudioDecodeError",
    "ConfigError",
    "DataSourceError",
    "EmptyAudioError",
    "ModelError",
    "NonFiniteAudioError",
    "VocabularyError",
    "__version__",
]
