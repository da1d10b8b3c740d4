"""Configurations and processors, from scratch and from a saved folder."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import ParakeetFeatureExtractor, Wav2Vec2Config, Wav2Vec2FeatureExtractor

from asr_lightning.errors import ConfigError, ModelError, VocabularyError
from asr_lightning.model.factory import (
    build_config,
    build_processor,
    checkpoint_tokenizer,
    load_feature_extractor,
    load_pretrained,
    resolve_tokenizer,
    with_overrides,
)
from asr_lightning.text.vocab import make_tokenizer
from tests.model import tiny


def test_overrides_recompute_derived_settings():
    config = with_overrides(
        Wav2Vec2Config(), {"conv_dim": (8, 8), "conv_kernel": (3, 3), "conv_stride": (2, 2)}
    )

    assert config.num_feat_extract_layers == 2


def test_encoder_settings_of_parakeet_may_be_given_flat():
    config = build_config("parakeet_ctc", tiny.VOCAB, {"hidden_size": 48, "num_attention_heads": 4})

    assert config.encoder_config.hidden_size == 48
    assert config.encoder_config.num_key_value_heads == 4
    assert (config.vocab_size, config.pad_token_id) == (len(tiny.VOCAB), tiny.VOCAB["<pad>"])


def test_unknown_settings_are_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="Did you mean num_hidden_layers"):
        build_config("wav2vec2", tiny.VOCAB, {"num_hidden_layer": 2})


def test_only_listed_architectures_are_built_from_scratch():
    with pytest.raises(ConfigError, match="parakeet_ctc"):
        build_config("whisper", tiny.VOCAB)


def test_a_vocabulary_without_a_blank_is_refused():
    with pytest.raises(VocabularyError, match="<pad>"):
        build_config("wav2vec2", {"a": 0, "b": 1})


def test_scratch_processors_follow_the_architecture():
    extractor, tokenizer = build_processor(None, "parakeet_ctc", tiny.VOCAB, {"num_mel_bins": 16})
    assert isinstance(extractor, ParakeetFeatureExtractor) and extractor.feature_size == 16
    assert tokenizer.get_vocab() == tiny.VOCAB

    extractor, _ = build_processor(None, "wav2vec2", tiny.VOCAB, {"feat_extract_norm": "group"})
    assert isinstance(extractor, Wav2Vec2FeatureExtractor)
    assert not extractor.return_attention_mask


def test_a_saved_folder_provides_its_own_processor(tmp_path):
    folder = tiny.scratch_module().save_hf(tmp_path / "hf")

    extractor, tokenizer = build_processor(str(folder))

    assert isinstance(extractor, Wav2Vec2FeatureExtractor)
    assert tokenizer.get_vocab() == tiny.VOCAB


def test_missing_pieces_are_named():
    with pytest.raises(ConfigError, match="model_name_or_path.*model_type"):
        build_processor(None)
    with pytest.raises(ConfigError, match="vocab"):
        build_processor(None, "wav2vec2")
    with pytest.raises(ModelError, match="feature extractor"):
        build_processor("/nonexistent/model", vocab=tiny.VOCAB)


def test_a_checkpoint_without_a_tokenizer_takes_the_datas_vocabulary(tmp_path):
    module = tiny.scratch_module()
    module.model.save_pretrained(tmp_path / "encoder")  # like facebook/wav2vec2-base
    module.feature_extractor.save_pretrained(tmp_path / "encoder")

    _, tokenizer = build_processor(str(tmp_path / "encoder"), vocab=tiny.VOCAB)

    assert tokenizer.get_vocab() == tiny.VOCAB
    with pytest.raises(ModelError, match="vocabulary built from the training transcripts"):
        build_processor(str(tmp_path / "encoder"))


def test_an_encoder_checkpoint_keeps_its_weights_under_a_new_head(tmp_path, caplog):
    saved = tiny.save_encoder_folder("wav2vec2", tmp_path / "encoder")
    tokenizer, own = resolve_tokenizer(str(tmp_path / "encoder"), tiny.VOCAB)
    assert not own

    with caplog.at_level(logging.INFO, logger="asr_lightning"):
        model = load_pretrained(str(tmp_path / "encoder"), tokenizer, True, {})

    encoder = {k: v for k, v in saved.state_dict().items() if not k.startswith("lm_head")}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in encoder.items())
    assert model.lm_head.out_features == len(tiny.VOCAB)
    assert model.config.pad_token_id == tiny.VOCAB["<pad>"]
    assert "new CTC head" in caplog.text and "random values" not in caplog.text


def test_encoder_weights_a_checkpoint_lacks_are_reported(tmp_path, caplog):
    tiny.save_encoder_folder("wav2vec2", tmp_path / "encoder")
    weights = tmp_path / "encoder" / "model.safetensors"
    tensors = load_file(weights)
    dropped = next(k for k in tensors if "encoder.layers.0.attention.q_proj.weight" in k)
    save_file({k: v for k, v in tensors.items() if k != dropped}, weights, {"format": "pt"})
    tokenizer, _ = resolve_tokenizer(str(tmp_path / "encoder"), tiny.VOCAB)

    with caplog.at_level(logging.WARNING, logger="asr_lightning"):
        load_pretrained(str(tmp_path / "encoder"), tokenizer, True, {})

    assert "1 encoder weights are not in" in caplog.text and "q_proj.weight" in caplog.text


def test_a_tokenizer_class_that_builds_itself_from_nothing_is_no_tokenizer(tmp_path):
    tiny.save_encoder_folder("lasr_ctc", tmp_path / "lasr")  # LasrTokenizer() has no text
    tokenizer, reason = checkpoint_tokenizer(str(tmp_path / "lasr"))
    assert tokenizer is None and "spells no characters" in reason


def test_a_family_without_a_ctc_head_is_refused_by_name(tmp_path):
    from transformers import WhisperConfig

    WhisperConfig().save_pretrained(tmp_path / "whisper")
    with pytest.raises(ModelError, match="'whisper' model, which has no CTC head.*wav2vec2"):
        load_pretrained(str(tmp_path / "whisper"), make_tokenizer(tiny.VOCAB), True, {})


def test_a_feature_extractor_needing_a_missing_package_names_the_family(tmp_path):
    tiny.save_encoder_folder("granite_speech5_ctc", tmp_path / "granite")
    try:
        import torchaudio  # noqa: F401  (does not install beside torch 2.13)
    except Exception:
        with pytest.raises(ModelError, match="granite_speech5_ctc models.*torchaudio"):
            load_feature_extractor(str(tmp_path / "granite"))
    else:
        assert load_feature_extractor(str(tmp_path / "granite")) is not None


def test_a_new_parakeet_front_end_passes_the_audio_on():
    """transformers draws a new Parakeet's convolutions from N(0, 0.02): through the subsampling
    front-end the input-dependent part of the signal shrinks ~1e5-fold, the model ignores the
    audio and learns a language prior (the quickstart never left 100% WER)."""
    import torch

    from tests.model.tiny import scratch_module

    module = scratch_module("parakeet_ctc")
    module.configure_model()
    mels = module.model.config.encoder_config.num_mel_bins
    mask = torch.ones(2, 160, dtype=torch.long)
    outputs = []
    with torch.no_grad():
        for seed in (1, 2):
            features = torch.randn(2, 160, mels, generator=torch.Generator().manual_seed(seed))
            hidden = module.model.encoder.subsampling(features, mask)
            outputs.append(hidden[0] if isinstance(hidden, tuple) else hidden)
    signal = (outputs[0] - outputs[1]).std() / outputs[0].std()
    assert signal.item() > 0.01  # 3e-6 with transformers' initialization, 0.13 with ours
