"""The Transcriber on tiny models: both runtimes, chunking, timestamps, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import numpy as np
import pytest
import soundfile as sf
import torch

from asr_lightning.audio.augment import normalize_level
from asr_lightning.audio.decode import load_audio
from asr_lightning.decoding.beam import BeamSearchDecoder
from asr_lightning.decoding.greedy import greedy_decode, ids_to_text
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.errors import ModelError
from asr_lightning.export.onnx import export_onnx
from asr_lightning.inference.backends import TorchBackend
from asr_lightning.inference.chunking import ChunkOptions
from asr_lightning.inference.models import CTCLogits, load_model
from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.model.features import extract_features
from tests.model.tiny import scratch_module

AN4_SPEAKER = Path("an4/wav/an4test_clstk/fcaw")


@pytest.fixture(scope="module")
def an4_clips(shared_data) -> list[Path]:
    return sorted((shared_data / AN4_SPEAKER).glob("*.sph"))[:4]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, an4_clips) -> tuple[Path, Path]:
    """A tiny Parakeet model as a Hugging Face folder and as an ONNX folder."""
    root = tmp_path_factory.mktemp("parakeet")
    scratch_module("parakeet_ctc", seed=3).save_hf(root / "hf")
    export_onnx(root / "hf", root / "onnx", check_audio=an4_clips[:1])
    return root / "hf", root / "onnx"


def test_torch_and_onnx_give_the_same_transcripts(folders, an4_clips):
    hf, onnx = folders
    torch_results = Transcriber.from_pretrained(hf, batch_size=3).transcribe(an4_clips)
    onnx_transcriber = Transcriber.from_pretrained(onnx)
    assert onnx_transcriber.backend.name == "onnx"
    onnx_results = onnx_transcriber.transcribe(an4_clips)
    assert [r.text for r in torch_results] == [r.text for r in onnx_results]
    assert any(r.text for r in torch_results)
    for result in torch_results:
        assert result.error is None and result.duration_s > 0.5
        assert " ".join(w.word for w in result.words) == result.text
        times = [t for w in result.words for t in (w.start, w.end)]
        assert times == sorted(times) and (not times or times[-1] <= result.duration_s + 0.1)


def test_short_clip_equals_unchunked_inference(folders, an4_clips):
    hf, _ = folders
    loaded = load_model(hf)
    audio = load_audio(an4_clips[0])
    features = extract_features(loaded.feature_extractor, [audio])
    with torch.no_grad():
        logits, lengths = CTCLogits(loaded.model).eval()(
            *(torch.from_numpy(v) for v in features.values())
        )
    expected = ids_to_text(greedy_decode(logits, lengths, 0)[0], loaded.tokenizer)
    result = Transcriber.from_pretrained(hf).transcribe_arrays([audio])[0]
    assert result.text == " ".join(expected.split())


class _Recording(TorchBackend):
    """The torch backend, noting the longest input row it was given."""

    longest = 0

    def __call__(self, inputs, attention_mask):
        self.longest = max(self.longest, int(attention_mask.sum(-1).max()))
        return super().__call__(inputs, attention_mask)


def test_ten_minute_file_runs_in_bounded_windows(folders, an4_clips, tmp_path):
    hf, _ = folders
    speech = np.concatenate([load_audio(path) for path in an4_clips])
    long = np.tile(speech, int(np.ceil(600 * 16_000 / speech.size)))[: 600 * 16_000]
    sf.write(tmp_path / "long.flac", long, 16_000)
    base = Transcriber.from_pretrained(hf)
    backend = _Recording(load_model(hf).model)
    transcriber = Transcriber(
        backend,
        base.feature_extractor,
        base.tokenizer,
        base.samples_per_frame,
        base.blank_id,
        chunking=ChunkOptions(chunk_s=20.0, stride_s=2.0),
    )
    result = transcriber.transcribe([tmp_path / "long.flac"])[0]
    assert result.error is None and result.duration_s == pytest.approx(600.0)
    assert 0 < backend.longest <= 20 * 100 + 1  # feature frames (10 ms) of one window
    assert result.words and result.words[-1].end > 500


def test_bad_inputs_do_not_stop_the_others(folders, an4_clips, tmp_path):
    hf, _ = folders
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(tmp_path / "empty.wav", np.zeros(0, "f4"), 16_000)
    sf.write(tmp_path / "silence.wav", np.zeros(32_000, "f4"), 16_000)
    sf.write(tmp_path / "blip.wav", np.zeros(400, "f4"), 16_000)  # 25 ms
    stereo = np.stack([load_audio(an4_clips[0], sample_rate=44_100)] * 2, axis=1)
    sf.write(tmp_path / "stereo44k.wav", stereo, 44_100)
    names = ["garbage.wav", "missing.wav", "empty.wav", "silence.wav", "blip.wav", "stereo44k.wav"]
    results = Transcriber.from_pretrained(hf).transcribe([tmp_path / n for n in names])
    by_name = {Path(r.source).name: r for r in results}
    assert "could not decode" in by_name["garbage.wav"].error
    assert "not found" in by_name["missing.wav"].error
    assert by_name["empty.wav"].error
    for name in ("silence.wav", "blip.wav", "stereo44k.wav"):
        assert by_name[name].error is None
    assert by_name["blip.wav"].text == ""
    reference = Transcriber.from_pretrained(hf).transcribe([an4_clips[0]])[0]
    assert by_name["stereo44k.wav"].duration_s == pytest.approx(reference.duration_s, abs=0.01)


class _FailsOnLength(TorchBackend):
    """The torch backend, raising for any batch that holds a row of ``bad_frames`` frames."""

    bad_frames = -1
    calls = 0

    def __call__(self, inputs, attention_mask):
        self.calls += 1
        if (attention_mask.sum(-1) == self.bad_frames).any():
            raise RuntimeError("this row breaks the runtime")
        return super().__call__(inputs, attention_mask)


def _with_backend(hf: Path, backend, batch_size: int) -> Transcriber:
    base = Transcriber.from_pretrained(hf)
    return Transcriber(
        backend,
        base.feature_extractor,
        base.tokenizer,
        base.samples_per_frame,
        base.blank_id,
        batch_size=batch_size,
    )


def test_a_runtime_error_on_one_clip_loses_only_that_clip(folders, an4_clips):
    hf, _ = folders
    audios = [load_audio(path) for path in an4_clips]
    expected = Transcriber.from_pretrained(hf, batch_size=4).transcribe_arrays(audios)
    backend = _FailsOnLength(load_model(hf).model)
    backend.bad_frames = audios[2].size // 160  # the valid feature frames of clip 2
    results = _with_backend(hf, backend, batch_size=4).transcribe_arrays(audios)
    assert "inference failed: RuntimeError: this row breaks the runtime" in results[2].error
    assert results[2].text == ""
    assert [r.text for i, r in enumerate(results) if i != 2] == [
        r.text for i, r in enumerate(expected) if i != 2
    ]
    assert backend.calls == 1 + len(audios)  # the batch, then each clip alone


@pytest.mark.parametrize(
    ("features_ahead", "batch_size", "expected"),
    [
        (4, 1, ["features"] * 4 + ["model"] * 4),
        (3, 1, ["features"] * 3 + ["model"] * 3 + ["features", "model"]),
        (1, 1, ["features", "model"] * 4),
        (4, 2, ["features", "features", "model", "model"]),  # windows, in whole batches
        (1, 2, ["features", "model"] * 2),
    ],
)
def test_features_of_several_batches_are_computed_before_the_model_runs(
    folders, an4_clips, features_ahead, batch_size, expected
):
    hf, _ = folders
    events: list[str] = []

    class Noting(TorchBackend):
        def __call__(self, inputs, attention_mask):
            events.append("model")
            return super().__call__(inputs, attention_mask)

    transcriber = _with_backend(hf, Noting(load_model(hf).model), batch_size=batch_size)
    transcriber.features_ahead = features_ahead
    featurize = transcriber.featurize
    transcriber.featurize = lambda audios: events.append("features") or featurize(audios)
    audios = [load_audio(path) for path in an4_clips]
    results = transcriber.transcribe_arrays(audios)
    assert events == expected
    reference = Transcriber.from_pretrained(hf, batch_size=1).transcribe_arrays(audios)
    assert [r.text for r in results] == [r.text for r in reference]


def test_features_ahead_must_be_positive(folders):
    with pytest.raises(ModelError, match="features_ahead must be >= 1"):
        Transcriber.from_pretrained(folders[0], features_ahead=0)


def test_beam_search_decodes_as_the_beam_search_decoder_does(folders, an4_clips):
    hf, _ = folders
    loaded = load_model(hf)
    audio = load_audio(an4_clips[1])
    features = extract_features(loaded.feature_extractor, [audio])
    with torch.no_grad():
        logits, _ = CTCLogits(loaded.model).eval()(
            *(torch.from_numpy(v) for v in features.values())
        )
    tokens = loaded.tokenizer.convert_ids_to_tokens(list(range(len(loaded.tokenizer))))
    options = DecodingOptions(method="beam", beam_width=8)
    search = BeamSearchDecoder(tokens, 0, options=options)
    expected = ids_to_text(search.decode(logits[0].numpy()).ids, loaded.tokenizer)
    result = Transcriber.from_pretrained(hf, decoding=options).transcribe_arrays([audio])[0]
    assert result.text == " ".join(expected.split())


def test_checkpoint_loads_like_its_folder(tmp_path, an4_clips):
    module = scratch_module("parakeet_ctc", seed=5)
    module.save_hf(tmp_path / "hf")
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        tmp_path / "model.ckpt",
    )
    from_ckpt = Transcriber.from_pretrained(tmp_path / "model.ckpt").transcribe(an4_clips[:2])
    from_hf = Transcriber.from_pretrained(tmp_path / "hf").transcribe(an4_clips[:2])
    assert [r.text for r in from_ckpt] == [r.text for r in from_hf]


def test_onnx_backend_needs_an_onnx_folder(folders):
    hf, _ = folders
    with pytest.raises(ModelError, match="asr-lightning export"):
        Transcriber.from_pretrained(hf, backend="onnx")


def test_the_level_normalization_of_training_is_applied(tmp_path, an4_clips):
    """A model trained on level-normalized audio hears quiet input at that level, on any runtime."""
    scratch_module("parakeet_ctc", seed=3, input_level="rms").save_hf(tmp_path / "hf")
    export_onnx(tmp_path / "hf", tmp_path / "onnx", check_audio=an4_clips[:1])
    assert json.loads((tmp_path / "onnx" / "asr_lightning.json").read_text())["level"] == "rms"
    quiet = 0.01 * load_audio(an4_clips[0])
    for folder in (tmp_path / "hf", tmp_path / "onnx"):
        transcriber = Transcriber.from_pretrained(folder)
        assert transcriber.level == "rms"
        seen: list[np.ndarray] = []

        def recording(inputs, mask, run=transcriber.backend, seen=seen):
            seen.append(inputs)
            return run(inputs, mask)

        transcriber.backend = recording
        transcriber.transcribe_arrays([quiet])
        expected = transcriber.featurize([normalize_level(quiet, "rms")])["inputs"]
        np.testing.assert_allclose(seen[0], expected, atol=1e-5)
        raw = transcriber.featurize([quiet])["inputs"]
        assert np.abs(raw - expected).max() > 1e-2  # the level matters to what the model sees
