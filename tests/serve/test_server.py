"""The HTTP server for real: urllib and boto3's sagemaker-runtime against a live port."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from asr_lightning.serve.app import ServeOptions, ServingApp
from asr_lightning.serve.batching import BatchOptions
from asr_lightning.serve.requests import parse_request
from asr_lightning.serve.server import AsrServer

REPO = Path(__file__).resolve().parents[2]
MAX_BODY = 512 * 1024


@pytest.fixture(scope="module")
def server(transcriber):
    options = ServeOptions(BatchOptions(max_batch_size=4, max_wait_ms=30), max_body_bytes=MAX_BODY)
    running = AsrServer(ServingApp(transcriber, options), "127.0.0.1", 0).start()
    yield running
    running.shutdown()


def _post(url: str, body: bytes, content_type: str | None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        assert err.headers["Content-Type"] == "application/json"
        return err.code, json.loads(err.read())


def test_ping_and_transcripts_equal_the_transcriber(server, transcriber, encoded, speech):
    with urllib.request.urlopen(server.url + "/ping", timeout=10) as response:
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    expected = transcriber.transcribe_arrays([speech])[0]
    assert expected.text
    status, answer = _post(server.url + "/invocations", encoded["wav"], "audio/wav")
    assert (status, answer) == (200, {"text": expected.text, "confidence": expected.confidence})
    body = json.dumps({"audio": base64.b64encode(encoded["flac"]).decode(), "timestamps": True})
    status, answer = _post(server.url + "/invocations", body.encode(), "application/json")
    assert status == 200 and answer["text"] == expected.text
    assert [w["word"] for w in answer["words"]] == [w.word for w in expected.words]
    status, answer = _post(
        server.url + "/invocations?timestamps=true", encoded["opus"], "audio/ogg"
    )
    assert status == 200 and "words" in answer


@pytest.mark.parametrize(
    ("path", "body", "content_type", "headers", "status"),
    [
        ("/invocations", b"not audio at all", "audio/wav", {}, 400),
        ("/invocations", b"{broken", "application/json", {}, 400),
        ("/invocations", b'{"audio": "!!"}', "application/json", {}, 400),
        ("/invocations", b"RIFF", "text/plain", {}, 415),
        ("/invocations", b"RIFF", None, {}, 415),
        ("/invocations", b"x" * (MAX_BODY + 1), "audio/wav", {}, 413),
        ("/invocations", b"RIFF", "audio/wav", {"Accept": "text/csv"}, 406),
        ("/predict", b"RIFF", "audio/wav", {}, 404),
    ],
)
def test_bad_requests_get_json_4xx(server, path, body, content_type, headers, status):
    code, answer = _post(server.url + path, body, content_type, headers)
    assert code == status and answer["status"] == status and answer["error"]


def test_oversize_is_refused_from_the_header_alone(server):
    """413 arrives although the (claimed) 1 GB body is never sent."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Type", "audio/wav")
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    connection.send(b"RIFF")
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["status"] == 413
    connection.close()


def test_get_on_invocations_and_chunked_bodies(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/invocations")
    assert connection.getresponse().status == 405
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(
        "POST", "/invocations", body=iter([b"RIFF"]), headers={"Content-Type": "audio/wav"}
    )  # an iterable body is sent chunked
    assert connection.getresponse().status == 411
    connection.close()


def test_concurrent_requests_are_batched(server, encoded, transcriber, speech):
    expected = transcriber.transcribe_arrays([speech])[0]
    batches_before = server.app.batcher.stats.batches
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: _post(server.url + "/invocations", encoded["wav"], "audio/wav"),
                range(8),
            )
        )
    assert [(status, answer["text"]) for status, answer in answers] == [(200, expected.text)] * 8
    # a clip batched with others gets (almost) the logits, so the confidence, it gets alone
    assert [a["confidence"] for _, a in answers] == pytest.approx(
        [expected.confidence] * 8, abs=1e-3
    )
    assert server.app.batcher.stats.batches - batches_before < 8  # some requests shared a call


def test_boto3_invoke_endpoint_reaches_the_server(server, encoded, transcriber, speech):
    boto3 = pytest.importorskip("boto3")
    from botocore.exceptions import ClientError

    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    response = runtime.invoke_endpoint(
        EndpointName="asr",
        Body=encoded["wav"],
        ContentType="audio/wav",
        Accept="application/json",
        CustomAttributes="timestamps=true",
    )
    answer = json.loads(response["Body"].read())
    assert response["ContentType"] == "application/json"
    assert answer["text"] == transcriber.transcribe_arrays([speech])[0].text
    assert "words" in answer
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="asr", Body=b"nonsense", ContentType="audio/wav")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_the_seed_readme_invoke_works_verbatim(server, transcriber, speech, rate, tmp_path):
    """The seed's documented call: ``--content-type application/json --body
    '{"base64":"<BASE64_WAV>","sample_rate":16000}'``, for WAV files at any rate."""
    import soundfile as sf

    from asr_lightning.audio.decode import resample

    boto3 = pytest.importorskip("boto3")
    wav = tmp_path / f"clip_{rate}.wav"
    sf.write(wav, resample(speech, 16_000, rate), rate, subtype="PCM_16")
    runtime = boto3.client(
        "sagemaker-runtime", endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    body = '{"base64":"' + base64.b64encode(wav.read_bytes()).decode() + '","sample_rate":16000}'
    response = runtime.invoke_endpoint(
        EndpointName="my-asr-endpoint", ContentType="application/json", Body=body
    )
    answer = json.loads(response["Body"].read())
    expected = transcriber.transcribe([str(wav)])[0]
    assert answer["text"] == expected.text and answer["text"]
    assert answer["confidence"] == pytest.approx(expected.confidence, abs=1e-3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(model_folder: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """``asr-lightning serve`` in a subprocess, once it answers /ping."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "asr_lightning.cli", "serve", str(model_folder)]
    process = subprocess.Popen(
        [*command, "--port", str(port), *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=5) as response:
                    assert response.status == 200
                return process, url
            except (urllib.error.URLError, OSError):  # refused, or queued until a worker is up
                if process.poll() is not None:
                    raise AssertionError(process.stdout.read().decode()) from None
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
    except BaseException:
        _stop(process)
        raise


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if need be (a pool's workers see their pool go and exit too)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.stdout.close()


class _HalfSent:
    """A POST whose headers and first half of the body are sent; :meth:`finish` sends the rest."""

    def __init__(self, url: str, body: bytes, content_type: str = "audio/wav") -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.connection.putrequest("POST", "/invocations")
        self.connection.putheader("Content-Type", content_type)
        self.connection.putheader("Content-Length", str(len(body)))
        self.connection.endheaders()
        self.rest = body[len(body) // 2 :]
        self.connection.send(body[: len(body) // 2])

    def finish(self) -> tuple[int, dict]:
        self.connection.send(self.rest)
        return self.answer()

    def answer(self) -> tuple[int, dict]:
        response = self.connection.getresponse()
        answer = json.loads(response.read())
        self.connection.close()
        return response.status, answer


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits(model_folder, encoded):
    process, url = _serve(model_folder, "--batching.max_batch_size", "1")
    try:
        in_flight = _HalfSent(url, encoded["wav"])
        time.sleep(0.3)  # the server has read the headers: the request is in flight
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert _post(url + "/invocations", encoded["wav"], "audio/wav")[0] == 503
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url + "/ping", timeout=5)
        assert caught.value.code == 503  # load balancers stop sending
        status, answer = in_flight.finish()
        assert status == 200 and answer["text"]
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 10  # it left once nothing was in flight
    finally:
        _stop(process)


def test_draining_exits_at_its_bound_with_a_client_that_never_finishes(transcriber, encoded):
    options = ServeOptions(shutdown_timeout_s=1.0)
    running = AsrServer(ServingApp(transcriber, options), "127.0.0.1", 0).start()
    stuck = _HalfSent(running.url, encoded["wav"])
    _wait_for(lambda: running.app.in_flight == 1)
    started = time.monotonic()
    running.drain()
    assert running.wait(timeout_s=10)
    assert 0.9 < time.monotonic() - started < 5
    stuck.connection.close()


def test_a_slow_client_gets_408_without_holding_up_the_others(transcriber, encoded):
    options = ServeOptions(read_timeout_s=1.0)
    running = AsrServer(ServingApp(transcriber, options), "127.0.0.1", 0).start()
    try:
        slow = _HalfSent(running.url, encoded["wav"])  # never sends the second half
        started = time.monotonic()
        assert _post(running.url + "/invocations", encoded["wav"], "audio/wav")[0] == 200
        assert time.monotonic() - started < 1.0  # served while the slow one waits
        status, answer = slow.answer()
        assert status == 408 and "did not arrive within 1 s" in answer["error"]
        assert time.monotonic() - started >= 0.9
    finally:
        running.shutdown()


def test_requests_beyond_the_concurrency_cap_get_503(transcriber, encoded):
    options = ServeOptions(max_concurrent=1)
    running = AsrServer(ServingApp(transcriber, options), "127.0.0.1", 0).start()
    try:
        holding = _HalfSent(running.url, encoded["wav"])
        _wait_for(lambda: running.app.in_flight == 1)
        status, answer = _post(running.url + "/invocations", encoded["wav"], "audio/wav")
        assert status == 503 and "1 requests are being answered" in answer["error"]
        assert holding.finish()[0] == 200
        assert _post(running.url + "/invocations", encoded["wav"], "audio/wav")[0] == 200
    finally:
        running.shutdown()


def test_metrics_count_requests_latency_batches_and_audio(server, encoded, speech):
    from tests.serve.test_metrics import scrape

    before = scrape(server.url)
    for body, kind in ((encoded["wav"], "audio/wav"), (encoded["flac"], "audio/flac")):
        assert _post(server.url + "/invocations", body, kind)[0] == 200
    assert _post(server.url + "/endpoints/x/invocations", b"RIFF", "audio/wav")[0] == 400
    after = scrape(server.url)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("asr_requests_total", path="/invocations", status="200") == 2
    assert grew("asr_requests_total", path="/invocations", status="400") == 1
    assert grew("asr_request_duration_seconds_count", path="/invocations") == 3
    assert grew("asr_batch_size_count") >= 1 and grew("asr_batch_size_sum") == 2
    assert grew("asr_audio_seconds_total") == pytest.approx(2 * speech.size / 16_000, abs=0.01)
    assert after[("asr_queue_depth", ())] == 0
    assert after[("asr_requests_in_flight", ())] == 1  # the scrape itself


def test_workers_share_the_port_and_their_metrics(model_folder, encoded):
    process, url = _serve(model_folder, "--workers", "2")
    try:
        assert process.pid not in _worker_pids(url, 2)
        for _ in range(4):
            assert _post(url + "/invocations", encoded["wav"], "audio/wav")[0] == 200
        from tests.serve.test_metrics import scrape

        counts = scrape(url)  # any worker answers for all of them
        assert counts[("asr_requests_total", (("path", "/invocations"), ("status", "200")))] == 4
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        _stop(process)


def _worker_pids(url: str, count: int) -> set[int]:
    pids: set[int] = set()
    deadline = time.monotonic() + 120
    while len(pids) < count:  # each connection goes to whichever worker accepts it first
        with urllib.request.urlopen(url + "/ping", timeout=60) as response:
            pids.add(json.loads(response.read())["pid"])
        assert time.monotonic() < deadline, f"only {pids} answered"
    return pids


def test_workers_of_a_killed_pool_exit_instead_of_serving_on(model_folder):
    psutil = pytest.importorskip("psutil")
    process, url = _serve(model_folder, "--workers", "2")
    try:
        workers = [psutil.Process(pid) for pid in _worker_pids(url, 2)]
        process.kill()  # no SIGTERM to forward: the workers must notice by themselves
        process.wait()
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not [w for w in alive if w.status() != psutil.STATUS_ZOMBIE]
    finally:
        _stop(process)


def test_a_pool_whose_model_cannot_load_stops(tmp_path):
    command = [sys.executable, "-m", "asr_lightning.cli", "serve", str(tmp_path / "missing")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [*command, "--port", str(_free_port()), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1
    assert "failed to start" in done.stderr and "missing" in done.stderr


def test_mixed_load_from_eight_clients_drops_nothing(server, encoded, transcriber):
    """A small load test: valid and malformed requests interleaved, 8 clients at once."""
    cases = [
        (encoded["wav"], "audio/wav", 200),
        (encoded["opus"], "audio/ogg", 200),  # lossy: its own expected transcript
        (encoded["flac"], "application/octet-stream", 200),
        (b"RIFF" + bytes(300), "audio/wav", 400),
        (b'{"audio": 1}', "application/json", 400),
        (b"x" * (MAX_BODY + 1), "audio/wav", 413),
        (b"text", "text/plain", 415),
    ]
    expected = {
        body: transcriber.transcribe_arrays([parse_request(body, kind).audio])[0]
        for body, kind, status in cases
        if status == 200
    }
    workload = [cases[i % len(cases)] for i in range(42)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda case: _post(server.url + "/invocations", case[0], case[1]), workload)
        )
    assert len(answers) == len(workload)
    for (body, _, status), (code, answer) in zip(workload, answers, strict=True):
        assert code == status
        if status == 200:
            assert answer["text"] == expected[body].text
            assert answer["confidence"] == pytest.approx(expected[body].confidence, abs=1e-3)
        else:
            assert answer["status"] == status
