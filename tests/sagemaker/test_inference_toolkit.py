"""The handler under the real SageMaker inference toolkit: multi-model-server (Java) + Transformer.

The SageMaker PyTorch inference container runs ``code/inference.py`` this way: MMS's Java
frontend on the port, a Python worker with the toolkit's ``Transformer`` calling our
``model_fn``/``input_fn``/``predict_fn``/``output_fn``. Here the handler service is the
toolkit's default one (the container's adds only its PyTorch defaults, which ours override).
Skipped when Java or multi-model-server is missing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from asr_lightning.audio.decode import load_audio
from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.sagemaker.model_dir import complete_model_dir
from tests.model.tiny import scratch_module

REPO = Path(__file__).resolve().parents[2]
AN4_CLIP = Path("an4/wav/an4test_clstk/fcaw/an406-fcaw-b.sph")
STARTUP_TIMEOUT_S = 240.0
MIN_PORT, MAX_PORT = 20_000, 32_000
#: A handler service module as the PyTorch container has one (one class, found by MMS).
HANDLER_SERVICE = """
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer


class HandlerService(DefaultHandlerService):
    def __init__(self):
        super().__init__(Transformer(default_inference_handler=DefaultInferenceHandler()))
"""

pytest.importorskip("sagemaker_inference")
pytest.importorskip("mms")
if shutil.which("java") is None or shutil.which("multi-model-server") is None:
    pytest.skip("needs java and multi-model-server on PATH", allow_module_level=True)


def _free_port() -> int:
    """A free port below 32767: MMS parses ports as a Java ``short``."""
    for port in random.sample(range(MIN_PORT, MAX_PORT), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {MIN_PORT}..{MAX_PORT}")


def _request(url: str, body: bytes | None = None, content_type: str | None = None, headers=None):
    request = urllib.request.Request(
        url, data=body, method="POST" if body else "GET", headers=headers or {}
    )
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def toolkit(tmp_path_factory, shared_data):
    """MMS serving a model dir written by the training entry; yields (url, model dir)."""
    root = tmp_path_factory.mktemp("mms")
    model_dir = root / "model"
    scratch_module("wav2vec2", seed=5).save_hf(model_dir / "hf_model")
    complete_model_dir(model_dir, REPO)
    (root / "service").mkdir()
    (root / "service" / "asr_handler_service.py").write_text(HANDLER_SERVICE)
    port, management = _free_port(), _free_port()
    (root / "mms.properties").write_text(
        f"inference_address=http://127.0.0.1:{port}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        "default_service_handler=asr_handler_service\n"
        "default_workers_per_model=1\nload_models=ALL\ndecode_input_request=false\n"
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": f"{model_dir / 'code'}:{root / 'service'}",
        "TMPDIR": str(root),  # MMS keeps its pid file there
        "SAGEMAKER_PROGRAM": "inference.py",
    }
    # as sagemaker_inference.model_server starts it: store "/", the model dir's absolute path
    command = ["multi-model-server", "--start", "--foreground", "--model-store", "/"]
    command += ["--mms-config", str(root / "mms.properties"), "--models", f"model={model_dir}"]
    log = (root / "mms.log").open("w")
    process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process, root / "mms.log")
        yield url, model_dir
    finally:
        subprocess.run(["multi-model-server", "--stop"], env=env, cwd=root, timeout=60)
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Until the worker has loaded the model (``/ping`` is 200 before that)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            status, _ = _request(url + "/ping")
            if status == 200:
                status, body = _request(url + "/invocations", b"{}", "application/json")
                if status == 400 and body.startswith(b'{"error"'):  # answered by our input_fn
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(1.0)
    pytest.fail("MMS did not serve the model in time:\n" + log.read_text()[-3000:])


def test_toolkit_transcribes_wav_and_json(toolkit, shared_data, tmp_path):
    import base64

    import soundfile as sf

    url, model_dir = toolkit
    audio = load_audio(shared_data / AN4_CLIP)
    wav = tmp_path / "clip.wav"
    sf.write(wav, audio, 16_000, subtype="PCM_16")
    transcript = Transcriber.from_pretrained(model_dir / "onnx").transcribe([wav])[0]
    expected = {"text": transcript.text, "confidence": transcript.confidence}
    status, body = _request(url + "/invocations", wav.read_bytes(), "audio/wav")
    assert (status, json.loads(body)) == (200, expected), body
    encoded = base64.b64encode(wav.read_bytes()).decode()
    for document in ({"audio": encoded}, {"base64": encoded, "sample_rate": 16000}):  # the seed's
        status, body = _request(
            url + "/invocations", json.dumps(document).encode(), "application/json"
        )
        assert status == 200 and json.loads(body) == expected
    attributes = {"X-Amzn-SageMaker-Custom-Attributes": "timestamps=true"}
    status, body = _request(url + "/invocations", wav.read_bytes(), "audio/wav", attributes)
    assert status == 200 and json.loads(body)["words"], body


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not audio", "audio/wav", 400),
        (b"{oops", "application/json", 400),
        (b'{"audio": "AQID", "sample_rate": 16000}', "application/json", 400),
        (b"RIFF", "text/csv", 415),
    ],
)
def test_toolkit_answers_bad_input_with_our_4xx(toolkit, body, content_type, status):
    code, answer = _request(toolkit[0] + "/invocations", body, content_type)
    assert code == status
    first_line = answer.decode().splitlines()[0]  # the toolkit appends its traceback
    assert json.loads(first_line)["status"] == status
