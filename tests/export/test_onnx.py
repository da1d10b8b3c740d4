"""ONNX export of tiny wav2vec2 and Parakeet models, checked with the real onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from asr_lightning.artifacts import INT8_FILE, METADATA_FILE, ONNX_FILE
from asr_lightning.audio.decode import load_audio
from asr_lightning.errors import ConfigError
from asr_lightning.export.onnx import export_onnx
from asr_lightning.inference.models import CTCLogits, load_model
from asr_lightning.model.features import extract_features
from tests.conftest import REPO_ROOT
from tests.model.tiny import scratch_module

CLIPS = sorted((REPO_ROOT / "data" / "quickstart" / "audio").glob("test-0000*.opus"))[:3]


@pytest.fixture(scope="module", params=["wav2vec2", "parakeet_ctc"])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(request.param)
    scratch_module(request.param).save_hf(root / "hf")
    report = export_onnx(root / "hf", root / "onnx", quantize="int8", check_audio=CLIPS)
    return root / "hf", root / "onnx", report


def test_export_matches_pytorch_on_real_clips(exported):
    _, out, report = exported
    fp32, int8 = report.checks
    assert (fp32.file, int8.file) == (ONNX_FILE, INT8_FILE)
    assert fp32.clips == len(CLIPS) == 3
    assert fp32.max_abs_logit_diff < 1e-4
    assert fp32.same_transcripts == fp32.clips
    assert 0 < int8.max_abs_logit_diff < 1.0  # quantized, hence different, but close
    ops = {node.op_type for node in onnx.load(str(out / INT8_FILE)).graph.node}
    assert "DynamicQuantizeLinear" in ops


def test_onnx_folder_is_self_contained(exported):
    hf, out, _ = exported
    metadata = json.loads((out / METADATA_FILE).read_text())
    loaded = load_model(hf)
    vocab = loaded.tokenizer.get_vocab()
    assert metadata["vocabulary"] == sorted(vocab, key=vocab.get)
    assert metadata["sampling_rate"] == 16_000
    assert metadata["blank_id"] == loaded.model.config.pad_token_id
    wav2vec2 = loaded.model.config.model_type == "wav2vec2"
    assert metadata["feature_type"] == ("waveform" if wav2vec2 else "log-mel")
    assert metadata["samples_per_frame"] == (10 if wav2vec2 else 160 * 8)  # tiny strides
    for name in ("preprocessor_config.json", "vocab.json", "config.json"):
        assert (out / name).is_file()


def test_dynamic_batch_and_time_axes(exported):
    """A batch of a size and lengths never seen at export gives PyTorch's logits."""
    hf, out, _ = exported
    loaded = load_model(hf)
    audios = [load_audio(path)[:n] for path, n in zip(CLIPS, (41_000, 9_000, 23_456), strict=True)]
    audios.append(load_audio(CLIPS[0])[:5_000])
    features = extract_features(loaded.feature_extractor, audios)
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    logits, lengths = session.run(None, features)
    with torch.no_grad():
        ref, ref_lengths = CTCLogits(loaded.model).eval()(
            *(torch.from_numpy(v) for v in features.values())
        )
    np.testing.assert_array_equal(lengths, ref_lengths.numpy())
    for row, valid in enumerate(lengths):
        np.testing.assert_allclose(logits[row, :valid], ref[row, :valid].numpy(), atol=1e-4)


def test_low_opset_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="opset"):
        export_onnx("unused", tmp_path, opset=11)
