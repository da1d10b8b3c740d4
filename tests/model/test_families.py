"""Every CTC family of the installed transformers: padding, fine-tuning a tokenizer-less
checkpoint through ``asr-lightning fit``, and loading the result in transformers."""

from __future__ import annotations

import glob
import json
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForCTC, AutoTokenizer, pipeline

from asr_lightning.audio.decode import load_audio
from asr_lightning.cli import main
from asr_lightning.inference.models import CTCLogits
from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.model.families import (
    PADDING_EXACT,
    PADDING_INEXACT,
    blank_token_id,
    ctc_model_types,
    head_settings,
    mask_argument,
    padding_exact,
    padding_warning,
)
from asr_lightning.model.features import extract_features
from asr_lightning.model.padding import guard_padding
from tests.model import tiny
from tests.training_support import QUICKSTART, run_dirs, tiny_config

FAMILIES = ctc_model_types()
#: Waveform families whose feature encoder comes with either norm (wav2vec2-base has group
#: norm, XLS-R and the large models layer norm).
TWO_NORMS = [t for t in FAMILIES if hasattr(tiny.family_config(t), "feat_extract_norm")]
#: transformers' ASR pipeline gives every CTC model an ``attention_mask`` keyword, which
#: OmniASRForCTC (``padding_mask``) does not take: the pipeline cannot run OmniASR at all.
PIPELINE_BROKEN = {"omniasr_ctc"}


def _torchaudio_imports() -> bool:
    try:
        import torchaudio  # noqa: F401
    except Exception:
        return False
    return True


def _clips() -> tuple[np.ndarray, np.ndarray]:
    files = sorted(glob.glob(str(QUICKSTART / "audio" / "test-*.opus")))
    short, long = sorted((load_audio(f) for f in files[:4]), key=len)[::3]
    assert len(short) < len(long)
    return short, long


def _synthetic_features(model: torch.nn.Module, frames: int) -> torch.Tensor:
    """Random filter-bank input for a family whose feature extractor cannot run here."""
    width = model.config.encoder_config.num_mel_bins * 4  # Granite: mel + delta, 2 stacked
    return torch.randn(1, frames, width, generator=torch.Generator().manual_seed(frames))


def test_every_installed_family_is_classified():
    assert set(FAMILIES) <= PADDING_EXACT | set(PADDING_INEXACT)
    assert not PADDING_EXACT & set(PADDING_INEXACT)


def test_an_unknown_family_counts_as_inexact_and_is_named():
    assert not padding_exact("wav2vec3")
    assert "wav2vec3" in padding_warning("wav2vec3")
    assert padding_warning("wav2vec2") is None


@pytest.mark.parametrize(
    "model_type,norm",
    [(t, n) for t in FAMILIES for n in (("group", "layer") if t in TWO_NORMS else ("group",))],
)
def test_a_clip_in_a_padded_batch_gets_its_outputs_alone_unless_the_family_is_inexact(
    model_type, norm
):
    config = tiny.family_config(model_type, norm)
    torch.manual_seed(0)
    model = AutoModelForCTC.from_config(config).eval()
    guard_padding(model)
    wrapper = CTCLogits(model)
    try:
        extractor = tiny.family_feature_extractor(model_type, config)
    except ImportError:  # Granite Speech 5: torchaudio; its model is checked on random frames
        extractor = None
    if extractor is None:
        short, long = _synthetic_features(model, 50), _synthetic_features(model, 80)
        batch = torch.zeros(2, 80, short.shape[-1])
        batch[0, :50], batch[1] = short[0], long[0]
        mask = torch.ones(2, 80, dtype=torch.long)
        mask[0, 50:] = 0
        alone_inputs, alone_mask = short, torch.ones(1, 50, dtype=torch.long)
    else:
        clips = _clips()
        alone = extract_features(extractor, [clips[0]])
        padded = extract_features(extractor, list(clips))
        alone_inputs, alone_mask = (torch.from_numpy(alone[k]) for k in alone)
        batch, mask = (torch.from_numpy(padded[k]) for k in padded)

    with torch.no_grad():
        logits_alone, lengths_alone = wrapper(alone_inputs, alone_mask)
        logits_batch, lengths_batch = wrapper(batch, mask)

    valid = int(lengths_alone[0])
    assert int(lengths_batch[0]) == valid
    difference = (logits_batch[0, :valid] - logits_alone[0, :valid]).abs().max().item()
    if padding_exact(model_type):
        assert difference < 1e-4, f"{model_type} ({norm} norm) leaks padding: {difference}"
    else:  # what PADDING_INEXACT says, so the per-clip fallback is not for nothing
        assert difference > 1e-3


def test_omniasr_gets_its_mask_as_padding_mask_and_its_blank_apart_from_pad():
    config = tiny.family_config("omniasr_ctc")
    model = AutoModelForCTC.from_config(config)
    assert mask_argument(model) == "padding_mask"
    settings = head_settings(config, vocab_size=30, blank=0)
    assert settings == {"vocab_size": 30, "pad_token_id": 0, "blank_token_id": 0}
    config.blank_token_id, config.pad_token_id = 0, 1
    assert blank_token_id(config) == 0


@pytest.mark.slow
@pytest.mark.parametrize("model_type", FAMILIES)
def test_fine_tuning_a_tokenizer_less_checkpoint_of_every_family(
    model_type, tmp_path, capsys, monkeypatch
):
    """``fit`` on a folder with no tokenizer and no CTC head, then the HF folder it writes in
    transformers' pipeline and in our Transcriber, alone and in a padded batch."""
    checkpoint = tmp_path / "encoder"
    tiny.save_encoder_folder(model_type, checkpoint)
    assert not list(checkpoint.glob("*vocab*")) and not list(checkpoint.glob("tokenizer*"))
    config = tiny_config(
        tmp_path,
        train=16,
        evaluation=4,
        model={
            "model_name_or_path": str(checkpoint),
            "model_type": None,
            "config_overrides": None,
            "learning_rate": 1e-3,
        },
        # a validation mid-run: SEW's clips are evaluated one by one, the others batched
        trainer={"max_steps": 3, "val_check_interval": 2, "check_val_every_n_epoch": None},
    )

    monkeypatch.setattr(sys, "argv", ["asr-lightning", "fit", "--config", str(config)])
    code = main()

    if model_type == "granite_speech5_ctc" and not _torchaudio_imports():
        # its feature extractor needs torchaudio, which does not install beside torch 2.13
        assert code == 2
        error = capsys.readouterr().err
        assert "granite_speech5_ctc" in error and "torchaudio" in error
        return
    assert code == 0
    hf_model = run_dirs(tmp_path)[-1] / "hf_model"
    vocab = json.loads((hf_model / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["<pad>"] == 0 and "|" in vocab and "A" in vocab  # built from the transcripts
    saved = json.loads((hf_model / "config.json").read_text(encoding="utf-8"))
    assert saved["vocab_size"] == len(vocab)
    assert saved.get("blank_token_id", saved["pad_token_id"]) == vocab["<pad>"]

    short, long = _clips()
    transcriber = Transcriber.from_pretrained(hf_model, batch_size=8)
    alone = transcriber.transcribe_arrays([short])[0].text
    assert transcriber.transcribe_arrays([short, long])[0].text == alone
    if model_type in PIPELINE_BROKEN:
        with pytest.raises(TypeError, match="attention_mask"):
            pipeline("automatic-speech-recognition", model=str(hf_model))(short.copy())
        assert _transformers_greedy(hf_model, short) == alone
    else:
        asr = pipeline("automatic-speech-recognition", model=str(hf_model))
        assert " ".join(asr(short.copy())["text"].split()) == alone


def _transformers_greedy(folder, audio: np.ndarray) -> str:
    """The transcript transformers alone gives: its extractor, model, argmax, tokenizer."""
    from transformers import AutoFeatureExtractor

    model = AutoModelForCTC.from_pretrained(str(folder)).eval()
    features = AutoFeatureExtractor.from_pretrained(str(folder))(
        audio, sampling_rate=16_000, return_tensors="pt"
    )
    with torch.no_grad():
        ids = model(**features).logits.argmax(-1)[0]
    text = AutoTokenizer.from_pretrained(str(folder)).decode(ids)
    return " ".join(text.split())
