"""CTC loss in fp32 and output lengths, checked against the models' own computations."""

from __future__ import annotations

import pytest
import torch

from asr_lightning.model.ctc import ctc_loss, output_lengths, uses_attention_mask
from tests.model import tiny


@pytest.mark.parametrize("model_type", ["wav2vec2", "parakeet_ctc"])
def test_the_loss_matches_the_models_own_ctc_loss(model_type):
    module = tiny.scratch_module(model_type).eval()
    batch = tiny.batch_of(module, [0.3, 0.6])
    model = module.model
    name = model.main_input_name

    with torch.no_grad():
        own = model(batch[name], attention_mask=batch["attention_mask"], labels=batch["labels"])
        ours = ctc_loss(own.logits, output_lengths(model, batch), batch["labels"], module.blank_id)

    torch.testing.assert_close(ours, own.loss)


@pytest.mark.parametrize("model_type", ["wav2vec2", "parakeet_ctc"])
def test_output_lengths_match_the_models_own_mask(model_type):
    module = tiny.scratch_module(model_type)
    batch = tiny.batch_of(module, [0.3, 0.45, 0.6], ["a", "abc", "cab ba"])
    model = module.model

    with torch.no_grad():
        logits = model(batch[model.main_input_name], attention_mask=batch["attention_mask"]).logits
    if model_type == "wav2vec2":
        mask = model._get_feature_vector_attention_mask(logits.shape[1], batch["attention_mask"])
    else:
        mask = model._get_output_attention_mask(batch["attention_mask"], logits.shape[1])

    assert output_lengths(model, batch).tolist() == mask.sum(-1).tolist()
    assert output_lengths(model, batch).dtype == torch.long


def test_the_loss_stays_finite_for_large_half_precision_logits():
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 50, 40, generator=generator) * 2e4).clamp(-6e4, 6e4).half()
    labels = torch.tensor([[3, 4, 5, -100], [7, 7, 8, 9]])
    lengths = torch.tensor([30, 50])

    loss = ctc_loss(logits, lengths, labels, blank_id=0)

    assert not torch.isfinite(torch.log_softmax(logits, dim=-1)).all()  # the fp16 trap
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, ctc_loss(logits.float(), lengths, labels, blank_id=0))


def test_the_loss_stays_fp32_under_bf16_autocast():
    module = tiny.scratch_module().eval()
    batch = tiny.batch_of(module, [0.3, 0.5])

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, lengths = module(batch)
        loss = module._loss(logits, lengths, batch["labels"])

    assert logits.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_labels_too_long_for_their_frames_give_zero_not_infinity():
    logits = torch.randn(1, 3, 6)
    labels = torch.tensor([[1, 2, 3, 4, 5]])

    assert ctc_loss(logits, torch.tensor([3]), labels, 0).item() == 0.0
    assert torch.isinf(ctc_loss(logits, torch.tensor([3]), labels, 0, zero_infinity=False))


def test_only_group_norm_wav2vec2_goes_without_an_attention_mask():
    from transformers import ParakeetCTCConfig, Wav2Vec2Config

    assert not uses_attention_mask(Wav2Vec2Config(feat_extract_norm="group"))
    assert uses_attention_mask(Wav2Vec2Config(feat_extract_norm="layer"))
    assert uses_attention_mask(ParakeetCTCConfig())
