"""Live transcription: the pure session logic, and ``/stream`` on a live server and in-process."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import time
import urllib.request

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from asr_lightning.decoding.decoder import Word
from asr_lightning.errors import ConfigError
from asr_lightning.serve import streaming as st
from asr_lightning.serve.app import ServeOptions, ServingApp
from asr_lightning.serve.asgi import create_app
from asr_lightning.serve.batching import BatchOptions
from asr_lightning.serve.requests import PCM_ENCODING, parse_request
from asr_lightning.serve.server import AsrServer

CHUNK_S = 0.1


def _pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def _json_body(pcm: bytes, rate: int, timestamps: bool = True) -> bytes:
    document = {"audio": base64.b64encode(pcm).decode(), "sample_rate": rate}
    return json.dumps({**document, "encoding": PCM_ENCODING, "timestamps": timestamps}).encode()


# -- the session, without a socket ------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_final_audio_is_what_invocations_decodes(speech, rate):
    from asr_lightning.audio.decode import resample

    pcm = _pcm(resample(speech, 16_000, rate))
    session = st.StreamSession(rate, 16_000)
    step = int(rate * CHUNK_S) * 2
    for start in range(0, len(pcm), step):
        session.feed(pcm[start : start + step])
    expected = parse_request(_json_body(pcm, rate), "application/json").audio
    np.testing.assert_array_equal(session.final_audio(), expected)
    assert session.duration_s == pytest.approx(len(pcm) / 2 / rate)


def test_partials_are_spaced_one_at_a_time_and_skip_ahead():
    session = st.StreamSession(16_000, 16_000, st.StreamOptions(partial_interval_s=0.5))
    quarter = bytes(8000)  # 0.25 s
    session.feed(quarter)
    assert not session.partial_due()
    session.feed(quarter)
    assert session.partial_due()
    request = session.start_partial()
    assert request.audio.size == 8000 and (request.offset_s, request.duration_s) == (0, 0.5)
    for _ in range(6):  # 1.5 s more while the model is busy: no second partial
        session.feed(quarter)
        assert not session.partial_due()
    assert session.finish_partial(request, "a b", [Word("a", 0, 0.1), Word("b", 0.2, 0.3)]) == "a b"
    assert session.partial_due()  # at once, on all the audio so far
    assert session.start_partial().audio.size == 32_000


def test_long_streams_decode_a_trailing_window_and_keep_earlier_words():
    options = st.StreamOptions(partial_interval_s=0.5, partial_window_s=2.0)
    session = st.StreamSession(16_000, 16_000, options)
    session.feed(bytes(2 * 16_000 * 2))  # 2 s
    first = session.start_partial()
    words = [Word("one", 0.1, 0.4), Word("two", 0.9, 1.2), Word("three", 1.5, 1.9)]
    assert session.finish_partial(first, "one two three", words) == "one two three"
    session.feed(bytes(16_000 * 2))  # 3 s: the window is the last 2 s
    second = session.start_partial()
    assert second.audio.size == 32_000 and second.offset_s == pytest.approx(1.0)
    # "two" starts before 1.0 + WINDOW_MARGIN_S: kept from the first partial; the window's
    # own (cut) version of the word is dropped, its later words follow
    window = [Word("wo", 0.0, 0.2), Word("three", 0.5, 0.9), Word("four", 1.5, 1.8)]
    assert session.finish_partial(second, "wo three four", window) == "one two three four"


def test_frames_and_limits_are_checked():
    session = st.StreamSession(16_000, 16_000, st.StreamOptions(max_duration_s=1.0))
    with pytest.raises(st.StreamError) as odd:
        session.feed(b"\x00\x01\x02")
    assert (odd.value.status, odd.value.code) == (400, st.CLOSE_POLICY_VIOLATION)
    session.feed(bytes(32_000))  # exactly 1 s
    with pytest.raises(st.StreamError) as long:
        session.feed(bytes(2))
    assert (long.value.status, long.value.code, long.value.outcome) == (413, 1009, "too_long")
    assert session.final_audio().size == 16_000


@pytest.mark.parametrize("value", [None, "", "abc", "16k", "10", "1000000"])
def test_bad_sample_rates(value):
    with pytest.raises(st.StreamError) as caught:
        st.parse_sample_rate(value)
    assert caught.value.status == 400 and "sample_rate" in caught.value.message


@pytest.mark.parametrize(
    "text", ["end", "{", "[]", '{"event": "pause"}', '{"event": "end", "x": 1}']
)
def test_unknown_text_frames(text):
    with pytest.raises(st.StreamError) as caught:
        st.parse_event(text)
    assert caught.value.to_dict()["status"] == 400
    assert st.parse_event('{"event": "end"}') == st.END_EVENT


@pytest.mark.parametrize("field", ["partial_interval_s", "partial_window_s", "max_duration_s"])
def test_stream_options_are_checked(field):
    with pytest.raises(ConfigError, match=field):
        st.StreamOptions(**{field: 0})


# -- a live server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(transcriber):
    options = ServeOptions(BatchOptions(max_batch_size=4, max_wait_ms=10))
    running = AsrServer(ServingApp(transcriber, options), "127.0.0.1", 0).start()
    yield running
    running.shutdown()


def _ws_url(server, query: str = "?sample_rate=16000") -> str:
    return server.url.replace("http://", "ws://") + "/stream" + query


def _streams(serving: ServingApp, outcome: str) -> float:
    value = serving.metrics.registry.get_sample_value("asr_streams_total", {"outcome": outcome})
    return value or 0.0


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _invoke(server, body: bytes) -> dict:
    request = urllib.request.Request(
        server.url + "/invocations", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_stream_gives_partials_then_the_offline_transcript(server, transcriber, speech):
    pcm = _pcm(speech)
    step = int(16_000 * CHUNK_S) * 2
    completed = _streams(server.app, "completed")
    audio_before = server.app.metrics.registry.get_sample_value("asr_audio_seconds_total")
    frames = []
    with connect(_ws_url(server), open_timeout=10) as ws:
        half = len(pcm) // 2 // step * step
        for start in range(0, half, step):
            ws.send(pcm[start : start + step])
        frames.append(json.loads(ws.recv(timeout=30)))  # a partial while audio keeps coming
        for start in range(half, len(pcm), step):
            ws.send(pcm[start : start + step])
        ws.send(json.dumps({"event": "end"}))
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(json.loads(ws.recv(timeout=30)))
        assert ws.close_code == 1000
    assert "partial" in frames[0] and isinstance(frames[0]["partial"], str)
    assert all(set(f) == {"partial", "duration_s"} for f in frames[:-1])
    covered = [f["duration_s"] for f in frames[:-1]]
    assert covered == sorted(covered) and 0 < covered[0] <= len(pcm) / 2 / 16_000
    final = frames[-1]
    answer = _invoke(server, _json_body(pcm, 16_000))
    offline = transcriber.transcribe_arrays(
        [parse_request(_json_body(pcm, 16_000), "application/json").audio]
    )[0]
    assert final["final"] == answer["text"] == offline.text and final["final"]
    assert [(w["word"], w["start"], w["end"]) for w in final["words"]] == [
        (w["word"], w["start"], w["end"]) for w in answer["words"]
    ]
    assert [w["confidence"] for w in final["words"]] == pytest.approx(
        [w["confidence"] for w in answer["words"]], abs=1e-3
    )
    assert final["confidence"] == pytest.approx(answer["confidence"], abs=1e-3)
    assert final["duration_s"] == pytest.approx(len(pcm) / 2 / 16_000)
    assert _streams(server.app, "completed") == completed + 1
    _wait_for(lambda: server.app.in_flight == 0)
    audio_after = server.app.metrics.registry.get_sample_value("asr_audio_seconds_total")
    assert audio_after - audio_before >= final["duration_s"]  # and the /invocations clip


def _refused(url: str, *frames) -> tuple[dict, int]:
    with connect(url, open_timeout=10) as ws:
        for frame in frames:
            ws.send(frame)
        error = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
        return error, ws.close_code


@pytest.mark.parametrize(
    ("query", "frames"),
    [
        ("", ()),
        ("?sample_rate=fast", ()),
        ("?sample_rate=10", ()),
        ("?sample_rate=16000", (b"\x00\x00\x01",)),
        ("?sample_rate=16000", (bytes(3200), "not json")),
        ("?sample_rate=16000", (bytes(3200), '{"event": "pause"}')),
    ],
)
def test_bad_streams_get_an_error_frame_and_1008(server, query, frames):
    before = _streams(server.app, "bad_request")
    error, code = _refused(_ws_url(server, query), *frames)
    assert error["status"] == 400 and error["error"] and set(error) == {"error", "status"}
    assert code == st.CLOSE_POLICY_VIOLATION
    assert _streams(server.app, "bad_request") == before + 1


def test_clients_that_vanish_leak_nothing_and_log_nothing(server, speech, caplog):
    caplog.set_level(logging.INFO)
    before = _streams(server.app, "disconnected")
    pcm = _pcm(speech)
    with connect(_ws_url(server), open_timeout=10) as ws:  # closes cleanly, without "end"
        ws.send(pcm[: len(pcm) // 2])
    with contextlib.suppress(OSError), connect(_ws_url(server), open_timeout=10) as ws:
        ws.send(pcm)
        time.sleep(0.2)  # a partial is in flight
        ws.socket.shutdown(socket.SHUT_RDWR)  # the TCP connection just goes
        ws.socket.close()
    _wait_for(lambda: _streams(server.app, "disconnected") == before + 2)
    _wait_for(lambda: server.app.in_flight == 0)
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not logged, [r.getMessage() for r in logged]


# -- limits that need their own options (in-process) ------------------------------------------


@pytest.fixture
def small_limits(transcriber):
    options = ServeOptions(read_timeout_s=0.5, streams=st.StreamOptions(max_duration_s=1.0))
    serving = ServingApp(transcriber, options)
    client = TestClient(create_app(serving))
    yield serving, client
    serving.close()


def _error_and_close(ws) -> tuple[dict, int]:
    error = ws.receive_json()
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return error, closed.value.code


def test_long_and_idle_streams_are_closed(small_limits):
    serving, client = small_limits
    with client.websocket_connect("/stream?sample_rate=16000") as ws:
        for _ in range(11):  # 1.1 s of silence, in 0.1 s frames
            ws.send_bytes(bytes(3200))
        error, code = _error_and_close(ws)
    assert (error["status"], code) == (413, 1009) and "1 s" in error["error"]
    with client.websocket_connect("/stream?sample_rate=16000") as ws:
        ws.send_bytes(bytes(3200))
        error, code = _error_and_close(ws)  # nothing more for 0.5 s
    assert (error["status"], code) == (408, 1008)
    assert _streams(serving, "too_long") == 1 and _streams(serving, "timeout") == 1


def test_draining_refuses_new_streams(small_limits):
    serving, client = small_limits
    serving.draining = True
    with client.websocket_connect("/stream?sample_rate=16000") as ws:
        error, code = _error_and_close(ws)
    assert (error["status"], code) == (503, st.CLOSE_TRY_AGAIN_LATER)
    assert _streams(serving, "refused") == 1


def test_an_empty_stream_has_an_empty_final(small_limits):
    serving, client = small_limits
    with client.websocket_connect("/stream?sample_rate=16000") as ws:
        ws.send_text('{"event": "end"}')
        final = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert final == {"final": "", "words": [], "confidence": final["confidence"], "duration_s": 0.0}
    assert closed.value.code == 1000
