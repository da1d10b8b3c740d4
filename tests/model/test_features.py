"""The lean log-mel front end gives the Hugging Face extractor's features, faster to call."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from transformers import ParakeetFeatureExtractor, Wav2Vec2FeatureExtractor

from asr_lightning.audio.decode import load_audio
from asr_lightning.model.features import LogMelFrontEnd, extract_features, feature_function

AN4_SPEAKER = Path("an4/wav/an4test_clstk/fcaw")


@pytest.fixture(scope="module")
def an4_audio(shared_data) -> list[np.ndarray]:
    return [load_audio(path) for path in sorted((shared_data / AN4_SPEAKER).glob("*.sph"))[:5]]


@pytest.mark.parametrize("preemphasis", [0.97, 0.0])
def test_same_features_and_mask_as_the_hugging_face_extractor(an4_audio, preemphasis):
    extractor = ParakeetFeatureExtractor(preemphasis=preemphasis)
    front_end = LogMelFrontEnd(extractor)
    # one clip, a padded batch of real speech, and a batch with a 0.1 s clip beside a long one
    for batch in ([an4_audio[0]], an4_audio, [an4_audio[1], an4_audio[2][:1600]]):
        expected = extract_features(extractor, batch)
        got = front_end(batch)
        assert got["inputs"].shape == expected["inputs"].shape
        assert got["inputs"].dtype == np.float32
        np.testing.assert_array_equal(got["attention_mask"], expected["attention_mask"])
        np.testing.assert_allclose(got["inputs"], expected["inputs"], atol=1e-4)
        # padding frames are exactly zero, as the model saw in training
        assert not got["inputs"][got["attention_mask"] == 0].any()


def test_other_settings_are_followed(an4_audio):
    extractor = ParakeetFeatureExtractor(feature_size=64, hop_length=128, win_length=320)
    got = LogMelFrontEnd(extractor)(an4_audio[:2])
    expected = extract_features(extractor, an4_audio[:2])
    assert got["inputs"].shape[-1] == 64
    np.testing.assert_allclose(got["inputs"], expected["inputs"], atol=1e-4)


def test_waveform_models_keep_their_own_extractor(an4_audio):
    extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
    function = feature_function(extractor)
    assert isinstance(function, partial) and function.func is extract_features
    assert isinstance(feature_function(ParakeetFeatureExtractor()), LogMelFrontEnd)
    features = function(an4_audio[:2])
    assert features["inputs"].ndim == 2
