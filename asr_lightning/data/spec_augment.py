"""SpecAugment for filter-bank models: time and frequency masks on training features.

Masks are drawn per utterance from the generator its dataset gives it, exactly like the waveform
augmentation: ``default_rng([data seed, epoch, index, SPEC_AUGMENT_STREAM])``, so an utterance
is masked the same way whatever the number of DataLoader workers, the batch it lands in, the
number of DDP processes or a mid-epoch resume, and differently every epoch. The extra
:data:`SPEC_AUGMENT_STREAM` entry keeps these draws apart from the waveform augmenter's
(``[seed, epoch, index]``).

Where it runs, and why: in the training collator (:class:`asr_lightning.data.collate.CTCCollator`
with ``spec_augment``), right after the batch's features are computed, in the DataLoader
workers. The collator is the first place the features exist (per-item augmentation in the
dataset sees waveforms), the workers run beside the training step rather than in it, and only
the training split's collator is given the options: validation, test, predict, ``transcribe``,
the server and the ONNX export never build one, so they cannot mask. wav2vec2-family models
keep their own masking of hidden states inside the model (``model.mask_time_prob`` ...), which
this module does not replace.

Only valid frames are masked (a row's first ``frames`` frames, from the attention mask), so the
padding stays exactly what the feature function wrote. Masked values are :data:`FILL_VALUE`,
0: the mean of every channel after the per-utterance, per-channel normalization of
Parakeet-style features, as NeMo fills them (``mask_value=0.0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asr_lightning.errors import ConfigError

#: Appended to an item's seed for its mask draws, apart from waveform augmentation's.
SPEC_AUGMENT_STREAM = 1
#: Value of masked features: the channel mean of per-utterance normalized features (NeMo's).
FILL_VALUE = 0.0
#: Model input name of filter-bank models (``(B, T, F)`` features); waveform models take
#: ``input_values``.
FILTER_BANK_INPUT = "input_features"


@dataclass(frozen=True)
class SpecAugmentOptions:
    """Time and frequency masks on the log-mel features of training batches.

    The defaults are NeMo's FastConformer/Conformer-CTC recipe
    (``examples/asr/conf/fastconformer/fast-conformer_ctc_bpe.yaml``: ``freq_masks: 2,
    freq_width: 27, time_masks: 10, time_width: 0.05``), itself the Conformer paper's setting
    (Gulati et al. 2020: F = 27, ten time masks of at most 5% of the utterance). As in NeMo,
    each mask's width is drawn uniformly from 0 to its maximum, and its start uniformly where
    the mask fits, so masks may overlap.
    """

    num_freq_masks: int = 2
    """Frequency masks per utterance (0: none)."""
    freq_width: int = 27
    """Largest width of a frequency mask, in filter-bank channels."""
    num_time_masks: int = 10
    """Time masks per utterance (0: none)."""
    time_width: int | float = 0.05
    """Largest width of a time mask: an int counts feature frames (10 ms each for Parakeet), a
    float in [0, 1] is a fraction of each utterance's valid frames (at least one frame)."""
    probability: float = 1.0
    """Probability of masking an utterance at all (lhotse/icefall use 0.9, NeMo 1.0)."""

    def __post_init__(self) -> None:
        for name in ("num_freq_masks", "freq_width", "num_time_masks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"spec_augment.{name} must be an integer >= 0, got {value!r}")
        width = self.time_width
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width < 0:
            raise ConfigError(
                f"spec_augment.time_width must be frames (an integer >= 0) or a fraction of "
                f"the utterance (a float in [0, 1]), got {width!r}"
            )
        if isinstance(width, float) and width > 1.0:
            raise ConfigError(
                f"spec_augment.time_width {width!r} is a float, so a fraction of the utterance, "
                f"and must be in [0, 1]; give an integer ({int(width)}) for a width in frames"
            )
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(
                f"spec_augment.probability must be in [0, 1], got {self.probability!r}"
            )

    def max_time_width(self, frames: int) -> int:
        """The widest time mask of an utterance of ``frames`` valid frames."""
        if isinstance(self.time_width, int):
            return min(self.time_width, frames)
        return min(max(1, int(frames * self.time_width)), frames)


def check_filter_bank(model_input_name: str) -> None:
    """Refuse SpecAugment options for a model that reads no filter-bank features.

    Raises:
        ConfigError: the model reads raw waveform (the wav2vec2 family), naming the fix.
    """
    if model_input_name != FILTER_BANK_INPUT:
        raise ConfigError(
            f"data.spec_augment masks filter-bank features ({FILTER_BANK_INPUT}), but this model "
            f"reads {model_input_name} (raw waveform, the wav2vec2 family). Remove "
            "data.spec_augment and mask inside the model instead: model.mask_time_prob, "
            "model.mask_time_length, model.mask_feature_prob, model.mask_feature_length."
        )


def mask_generator(seed: Sequence[int]) -> np.random.Generator:
    """The generator of one item's masks, from the item's ``(seed, epoch, index)``."""
    return np.random.default_rng([*seed, SPEC_AUGMENT_STREAM])


def _spans(count: int, max_width: int, extent: int, rng: np.random.Generator) -> list[slice]:
    """``count`` spans of widths uniform in [0, max_width], each placed within [0, extent)."""
    spans = []
    for _ in range(count):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, extent - width + 1))
        spans.append(slice(start, start + width))
    return spans


def draw_masks(
    options: SpecAugmentOptions, frames: int, channels: int, rng: np.random.Generator
) -> tuple[list[slice], list[slice]]:
    """``(time spans, channel spans)`` masked in one utterance; none when it is not drawn.

    Args:
        options: how many masks, how wide.
        frames: the utterance's valid frames (time spans stay within them).
        channels: its number of filter-bank channels.
        rng: the utterance's generator (:func:`mask_generator`).
    """
    if rng.random() >= options.probability or frames == 0:
        return [], []
    freq = _spans(options.num_freq_masks, min(options.freq_width, channels), channels, rng)
    time = _spans(options.num_time_masks, options.max_time_width(frames), frames, rng)
    return time, freq


def spec_augment(
    features: np.ndarray,
    frames: Sequence[int] | np.ndarray,
    rngs: Sequence[np.random.Generator],
    options: SpecAugmentOptions,
) -> np.ndarray:
    """A masked copy of a padded batch of filter-bank features.

    Args:
        features: (B, T, F) float features, padded after each row's valid frames.
        frames: (B,) valid frames of each row (the attention mask's sums).
        rngs: one generator per row (:func:`mask_generator`).
        options: how many masks, how wide, how often.

    Returns:
        (B, T, F) features, :data:`FILL_VALUE` in the masked spans of valid frames; padding
        frames are left as they were.
    """
    if features.ndim != 3 or len(frames) != len(features) or len(rngs) != len(features):
        raise ValueError(
            f"expected (B, T, F) features with B frame counts and B generators, got features "
            f"{features.shape}, {len(frames)} frame counts, {len(rngs)} generators"
        )
    out = features.copy()
    for row, (valid, rng) in enumerate(zip(frames, rngs, strict=True)):
        valid = int(valid)
        time, freq = draw_masks(options, valid, features.shape[2], rng)
        for span in time:
            out[row, span, :] = FILL_VALUE
        for span in freq:
            out[row, :valid, span] = FILL_VALUE
    return out
