"""SpecAugment masks on real AN4 log-mel features: where they fall, how wide, how seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from transformers import ParakeetFeatureExtractor

from asr_lightning.data.spec_augment import (
    FILL_VALUE,
    SpecAugmentOptions,
    check_filter_bank,
    draw_masks,
    mask_generator,
    spec_augment,
)
from asr_lightning.errors import ConfigError
from asr_lightning.model.features import LogMelFrontEnd

#: Stands in for padding, so that a test can tell untouched padding from masked frames.
PAD_SENTINEL = 7.0


@pytest.fixture(scope="module")
def an4_features(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(B, T, F) log-mel features of three AN4 clips of different lengths, padding set to
    :data:`PAD_SENTINEL`, and their (B,) valid frames."""
    paths = sorted((shared_data / "an4" / "wav" / "an4_clstk").glob("*/*.sph"))[:3]
    audios = [sf.read(str(path), dtype="float32")[0] for path in paths]
    batch = LogMelFrontEnd(ParakeetFeatureExtractor())(audios)
    features, valid = batch["inputs"], batch["attention_mask"].astype(bool)
    assert len(set(valid.sum(axis=1))) == 3  # different lengths: padding in two rows
    features[~valid] = PAD_SENTINEL
    return features, valid.sum(axis=1)


def _generators(seed: int, epoch: int, rows: int) -> list[np.random.Generator]:
    return [mask_generator((seed, epoch, index)) for index in range(rows)]


def test_masks_set_valid_frames_and_channels_to_the_mean_and_leave_padding(an4_features):
    features, frames = an4_features
    options = SpecAugmentOptions()

    masked = spec_augment(features, frames, _generators(42, 0, len(features)), options)

    assert masked.shape == features.shape and masked is not features
    for row, valid in enumerate(frames):
        rng = mask_generator((42, 0, row))
        time, freq = draw_masks(options, int(valid), features.shape[2], rng)
        expected = features[row].copy()
        for span in time:
            expected[span, :] = FILL_VALUE
        for span in freq:
            expected[:valid, span] = FILL_VALUE
        np.testing.assert_array_equal(masked[row], expected)
        assert (masked[row, valid:] == PAD_SENTINEL).all()  # padding exactly as it was
        assert (masked[row, :valid] == FILL_VALUE).any()
        assert sum(span.stop > span.start for span in time + freq) > 0
    assert (features[features != PAD_SENTINEL] != FILL_VALUE).all()  # the input is not changed


@pytest.mark.parametrize("time_width", [0.05, 0.2, 12])
def test_mask_counts_and_widths_stay_within_their_bounds(time_width):
    options = SpecAugmentOptions(num_freq_masks=3, freq_width=20, time_width=time_width)
    for frames in (1, 7, 90, 1800):
        limit = (
            min(time_width, frames)
            if isinstance(time_width, int)
            else max(1, int(frames * time_width))
        )
        assert options.max_time_width(frames) == limit
        for index in range(50):
            time, freq = draw_masks(options, frames, 80, mask_generator((0, 0, index)))
            assert len(time) == 10 and len(freq) == 3
            assert all(0 <= s.start <= s.stop <= frames and s.stop - s.start <= limit for s in time)
            assert all(0 <= s.start <= s.stop <= 80 and s.stop - s.start <= 20 for s in freq)


def test_widths_reach_their_maximum_and_a_fraction_follows_the_length():
    options = SpecAugmentOptions(num_freq_masks=2, freq_width=27, num_time_masks=10)
    time, freq = [], []
    for index in range(400):
        t, f = draw_masks(options, 1000, 80, mask_generator((1, 2, index)))
        time += [s.stop - s.start for s in t]
        freq += [s.stop - s.start for s in f]
    assert min(time) == 0 and max(time) == 50  # 5% of 1000 frames, both ends drawn
    assert min(freq) == 0 and max(freq) == 27


def test_the_same_seed_reproduces_the_masks_and_another_epoch_changes_them(an4_features):
    features, frames = an4_features
    options = SpecAugmentOptions()

    first = spec_augment(features, frames, _generators(42, 0, 3), options)
    again = spec_augment(features, frames, _generators(42, 0, 3), options)
    next_epoch = spec_augment(features, frames, _generators(42, 1, 3), options)
    other_seed = spec_augment(features, frames, _generators(7, 0, 3), options)

    np.testing.assert_array_equal(first, again)
    for row in range(3):
        assert not np.array_equal(first[row], next_epoch[row])
        assert not np.array_equal(first[row], other_seed[row])


def test_the_masks_draw_apart_from_the_waveform_augmentation():
    """The augmenter draws from ``[seed, epoch, index]``; the masks from a stream of their own."""
    plain, masks = np.random.default_rng([42, 0, 5]), mask_generator((42, 0, 5))
    assert plain.random(4).tolist() != masks.random(4).tolist()


def test_probability_decides_whether_an_utterance_is_masked(an4_features):
    features, frames = an4_features
    never = spec_augment(
        features, frames, _generators(42, 0, 3), SpecAugmentOptions(probability=0.0)
    )
    np.testing.assert_array_equal(never, features)
    half = SpecAugmentOptions(probability=0.5)
    drawn = [any(draw_masks(half, 100, 80, mask_generator((0, 0, i)))) for i in range(400)]
    assert 0.4 < np.mean(drawn) < 0.6


def test_no_masks_leave_the_features_as_they_are(an4_features):
    features, frames = an4_features
    options = SpecAugmentOptions(num_freq_masks=0, num_time_masks=0)
    unchanged = spec_augment(features, frames, _generators(42, 0, 3), options)
    np.testing.assert_array_equal(unchanged, features)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"time_width": 40.0}, "time_width 40.0 is a float.*give an integer \\(40\\)"),
        ({"time_width": -1}, "time_width must be frames"),
        ({"num_time_masks": -2}, "num_time_masks must be an integer >= 0"),
        ({"freq_width": 2.5}, "freq_width must be an integer"),
        ({"probability": 1.5}, "probability must be in \\[0, 1\\]"),
    ],
)
def test_bad_options_are_refused_with_the_fix(settings, message):
    with pytest.raises(ConfigError, match=message):
        SpecAugmentOptions(**settings)


def test_a_waveform_model_is_told_to_mask_inside_the_model():
    check_filter_bank("input_features")
    with pytest.raises(ConfigError, match="data.spec_augment.*input_values.*model.mask_time_prob"):
        check_filter_bank("input_values")


def test_a_batch_needs_one_frame_count_and_one_generator_per_row(an4_features):
    features, frames = an4_features
    with pytest.raises(ValueError, match="B frame counts and B generators"):
        spec_augment(features, frames[:2], _generators(0, 0, 3), SpecAugmentOptions())
