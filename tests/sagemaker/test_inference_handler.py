"""sagemaker_entry/inference.py from a model dir as training leaves it (hf_model/, onnx/, code/)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from asr_lightning.sagemaker.model_dir import complete_model_dir
from asr_lightning.serve.app import ServingApp
from asr_lightning.serve.requests import RequestError
from tests.model.tiny import scratch_module
from tests.training_support import load_handler

REPO = Path(__file__).resolve().parents[2]
AN4_CLIP = Path("an4/wav/an4test_clstk/fcaw/an406-fcaw-b.sph")

toolkit_errors = pytest.importorskip("sagemaker_inference.errors")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shared_data) -> Path:
    """``SM_MODEL_DIR`` after the training entry: hf_model/, onnx/ and code/inference.py."""
    root = tmp_path_factory.mktemp("sm") / "model"
    scratch_module("wav2vec2", seed=5).save_hf(root / "hf_model")
    complete_model_dir(root, REPO)
    return root


@pytest.fixture(scope="module")
def handler(model_dir):
    """The handler as the container imports it: code/inference.py of the model dir."""
    return load_handler(model_dir)


@pytest.fixture(scope="module")
def model(handler, model_dir):
    return handler.model_fn(str(model_dir))


@pytest.fixture(scope="module")
def wav(shared_data, tmp_path_factory) -> bytes:
    import soundfile as sf

    from asr_lightning.audio.decode import load_audio

    out = tmp_path_factory.mktemp("wav") / "clip.wav"
    sf.write(out, load_audio(shared_data / AN4_CLIP), 16_000, subtype="PCM_16")
    return out.read_bytes()


class _Context:
    """The toolkit's request context, as far as the handler reads it."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def get_all_request_header(self, index: int) -> dict[str, str]:
        return self.headers


def _answer(handler, model, body, content_type, accept="application/json", context=None):
    data = handler.input_fn(body, content_type, context)
    body, content_type = handler.output_fn(handler.predict_fn(data, model), accept)
    assert content_type == "application/json"
    return json.loads(body)


def test_model_dir_has_the_handler_and_prefers_onnx(model_dir, model, handler, monkeypatch):
    assert (model_dir / "code" / "inference.py").read_bytes() == (
        REPO / "sagemaker_entry" / "inference.py"
    ).read_bytes()
    assert model.backend.name == "onnx"
    monkeypatch.setenv(handler.BACKEND_ENV, "torch")
    assert handler.model_fn(str(model_dir)).backend.name == "torch"


def test_hf_only_model_dir_runs_on_torch(model_dir, handler, tmp_path):
    shutil.copytree(model_dir / "hf_model", tmp_path / "hf_model")
    assert handler.model_fn(str(tmp_path)).backend.name == "torch"


def test_every_content_type_answers_like_the_server(handler, model, wav):
    from asr_lightning.audio.decode import load_audio

    transcript = model.transcribe_arrays([load_audio(wav)])[0]
    expected = {"text": transcript.text, "confidence": transcript.confidence}
    assert transcript.text and 0.0 < transcript.confidence <= 1.0
    encoded = base64.b64encode(wav).decode()
    samples = np.frombuffer(wav[44:], dtype="<i2").tobytes()  # the WAV's PCM data
    pcm = json.dumps({"audio": base64.b64encode(samples).decode(), "sample_rate": 16000})
    requests = [
        (wav, "audio/wav"),
        (wav, "audio/x-wav"),
        (wav, "application/octet-stream"),
        (json.dumps({"audio": encoded}), "application/json"),  # the toolkit decodes JSON to str
        (json.dumps({"audio": encoded}).encode(), "application/json"),
        (pcm, "application/json"),
    ]
    app = ServingApp(model)
    try:
        for body, content_type in requests:
            answer = _answer(handler, model, body, content_type)
            assert answer == expected
            raw = body.encode() if isinstance(body, str) else body
            assert app.invoke(raw, content_type, None, None) == (200, answer)
    finally:
        app.close()


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_the_seed_readme_body_works_verbatim(handler, model, shared_data, rate, tmp_path):
    """``{"base64":"<BASE64_WAV>","sample_rate":16000}`` for WAV files at any rate."""
    import soundfile as sf

    from asr_lightning.audio.decode import load_audio, resample

    clip = tmp_path / f"clip_{rate}.wav"
    audio = resample(load_audio(shared_data / AN4_CLIP), 16_000, rate)
    sf.write(clip, audio, rate, subtype="PCM_16")
    body = '{"base64":"' + base64.b64encode(clip.read_bytes()).decode() + '","sample_rate":16000}'
    answer = _answer(handler, model, body, "application/json")
    expected = model.transcribe([str(clip)])[0]
    assert answer == {"text": expected.text, "confidence": expected.confidence} and answer["text"]


def test_timestamps_from_json_or_custom_attributes(handler, model, wav):
    body = json.dumps({"audio": base64.b64encode(wav).decode(), "timestamps": True})
    answer = _answer(handler, model, body, "application/json")
    assert answer["words"] and answer["duration_s"] > 1
    context = _Context({"x-amzn-sagemaker-custom-attributes": "timestamps=true"})
    assert _answer(handler, model, wav, "audio/wav", context=context) == answer


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"", "audio/wav", 400),
        (b"not audio", "audio/wav", 400),
        ("{oops", "application/json", 400),
        ('{"audio": "***"}', "application/json", 400),
        (b"RIFF", "text/csv", 415),
    ],
)
def test_bad_input_is_a_toolkit_4xx_with_the_json_error(handler, body, content_type, status):
    with pytest.raises(toolkit_errors.GenericInferenceToolkitError) as caught:
        handler.input_fn(body, content_type)
    assert caught.value.status_code == status
    document = json.loads(caught.value.message)
    assert document["status"] == status and document["error"]
    assert isinstance(caught.value.__cause__, RequestError)


def test_unacceptable_accept_is_a_406(handler):
    with pytest.raises(toolkit_errors.GenericInferenceToolkitError) as caught:
        handler.output_fn({"text": "x"}, "text/csv")
    assert caught.value.status_code == 406
