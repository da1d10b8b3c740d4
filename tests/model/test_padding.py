"""The padding guard: exact batches, unchanged weights and files, ONNX and checkpointing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCTC

from asr_lightning.export.onnx import export_loaded
from asr_lightning.inference.backends import OnnxBackend
from asr_lightning.inference.models import CTCLogits, LoadedModel
from asr_lightning.model.ctc import model_inputs
from asr_lightning.model.features import extract_features
from asr_lightning.model.padding import MaskedGroupNorm, find_guard, guard_padding
from asr_lightning.text.vocab import make_tokenizer
from tests.model import tiny


def _model(model_type: str, norm: str = "group", seed: int = 0):
    config = tiny.family_config(model_type, norm)
    config.vocab_size = len(tiny.VOCAB)
    torch.manual_seed(seed)
    return AutoModelForCTC.from_config(config).eval()


def _batch(model_type: str, config) -> dict[str, np.ndarray]:
    extractor = tiny.family_feature_extractor(model_type, config)
    return extract_features(extractor, [tiny.clip(0.6, seed=1), tiny.clip(1.3, seed=2)])


def test_the_guard_finds_the_group_norm_and_the_frame_convolutions():
    conformer = guard_padding(_model("wav2vec2-conformer"))
    assert conformer.group_norms == 1
    assert sum("depthwise_conv" in name for name in conformer.convolutions) == 2
    assert guard_padding(_model("wav2vec2", "layer")).group_norms == 0
    assert guard_padding(_model("parakeet_ctc")).convolutions == []  # masks itself


def test_guarding_twice_installs_once_and_keeps_the_weights_and_their_names():
    model = _model("wav2vec2-conformer")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    guard = guard_padding(model)
    assert guard_padding(model) is guard is find_guard(model)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert sum(isinstance(m, MaskedGroupNorm) for m in model.modules()) == 1


@pytest.mark.parametrize("model_type", ["wav2vec2", "wav2vec2-conformer", "data2vec-audio"])
def test_without_a_mask_a_guarded_model_computes_what_the_plain_one_does(model_type):
    plain, guarded = _model(model_type), _model(model_type)
    guard_padding(guarded)
    batch = _batch(model_type, plain.config)
    inputs = torch.from_numpy(batch["inputs"])
    with torch.no_grad():
        mask = torch.from_numpy(batch["attention_mask"])
        guarded(**model_inputs(guarded, inputs, mask))  # a masked call first: nothing lingers
        expected = plain(input_values=inputs).logits
        assert torch.equal(guarded(input_values=inputs).logits, expected)


def test_gradient_checkpointing_recomputes_the_guarded_layers_with_the_same_lengths():
    batch = _batch("wav2vec2-conformer", _model("wav2vec2-conformer").config)
    inputs, mask = (torch.from_numpy(batch[k]) for k in ("inputs", "attention_mask"))
    grads = []
    for checkpointing in (False, True):
        model = _model("wav2vec2-conformer").train()
        model.config.mask_time_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        model.config.layerdrop = 0.0
        guard_padding(model)
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        model(**model_inputs(model, inputs, mask)).logits.square().sum().backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        )
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["wav2vec2", "wav2vec2-conformer", "data2vec-audio"])
def test_the_onnx_export_of_a_guarded_model_is_padding_exact_at_other_lengths(model_type, tmp_path):
    model = _model(model_type)
    extractor = tiny.family_feature_extractor(model_type, model.config)
    loaded = LoadedModel(model, extractor, make_tokenizer(tiny.VOCAB))
    export_loaded(loaded, tmp_path)  # traced on two synthetic clips of 1.7 s and 0.9 s
    backend = OnnxBackend(tmp_path / "model.onnx")
    clips = [tiny.clip(0.5, seed=3), tiny.clip(2.2, seed=4), tiny.clip(1.1, seed=5)]

    alone = extract_features(extractor, clips[:1])
    batch = extract_features(extractor, clips)
    logits_alone, lengths_alone = backend(alone["inputs"], alone["attention_mask"])
    logits_batch, lengths_batch = backend(batch["inputs"], batch["attention_mask"])

    valid = int(lengths_alone[0])
    assert int(lengths_batch[0]) == valid < logits_batch.shape[1]
    np.testing.assert_allclose(logits_batch[0, :valid], logits_alone[0, :valid], atol=1e-4)
    with torch.no_grad():
        reference, _ = CTCLogits(model)(*(torch.from_numpy(batch[k]) for k in batch))
    np.testing.assert_allclose(logits_batch[0, :valid], reference[0, :valid].numpy(), atol=1e-4)


def test_the_per_row_group_norm_equals_the_traceable_masked_one_with_gradients():
    """Training takes the per-row statistics; tracing and export take masked sums."""
    from asr_lightning.model.padding import PaddingGuard

    torch.manual_seed(0)
    norm = MaskedGroupNorm(8, 8, affine=True)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    norm.guard, norm.conv_kernel, norm.conv_stride = PaddingGuard(), 10, 5
    norm.guard.sample_lengths = torch.tensor([500, 321, 64])
    hidden = (torch.randn(3, 8, 99) * 3 + 1).requires_grad_()
    fast = norm(hidden)
    lengths = (norm.guard.sample_lengths - 10) // 5 + 1
    masked = norm._masked(hidden, lengths)
    valid = torch.arange(99)[None, None, :] < lengths[:, None, None]
    torch.testing.assert_close(fast[valid.expand_as(fast)], masked[valid.expand_as(masked)])
    (grad_fast,) = torch.autograd.grad((fast * valid).square().sum(), hidden)
    (grad_masked,) = torch.autograd.grad((masked * valid).square().sum(), hidden)
    torch.testing.assert_close(grad_fast, grad_masked)
    alone = torch.nn.functional.group_norm(hidden[1:2, :, :63], 8, norm.weight, norm.bias)
    torch.testing.assert_close(fast[1:2, :, :63], alone)  # row 1 as if it ran alone
