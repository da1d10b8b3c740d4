"""The demo page at ``GET /`` in headless Chromium: upload, live ``/stream`` and recording."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.serve.app import ServeOptions, ServingApp
from asr_lightning.serve.batching import BatchOptions
from asr_lightning.serve.server import AsrServer
from tests.browser_support import fake_microphone_args, open_page
from tests.model.tiny import scratch_module

pytest.importorskip("playwright")
TIMEOUT_MS = 30_000
#: Reads the page's <audio> source (what it played back: the file, or the audio it sent).
PLAYER_BYTES = """async () => {
  const blob = await (await fetch(document.getElementById("player").src)).blob();
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let text = "";
  bytes.forEach((b) => { text += String.fromCharCode(b); });
  return [blob.type, btoa(text)];
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "hf_model"
    scratch_module("wav2vec2", seed=5).save_hf(folder)
    options = ServeOptions(BatchOptions(max_batch_size=4, max_wait_ms=10))
    serving = ServingApp(Transcriber.from_pretrained(folder), options)
    running = AsrServer(serving, "127.0.0.1", 0).start()
    yield running
    running.shutdown()


@pytest.fixture(scope="module")
def wav(speech, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "speech.wav"
    sf.write(path, speech, 16_000, subtype="PCM_16")
    return path


def _invoke(server, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(
        server.url + "/invocations?timestamps=true",
        body,
        {"Content-Type": content_type},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _shown(page) -> tuple[str, list[dict]]:
    """The transcript on the page, and its words (text, classes, title)."""
    page.wait_for_selector("#transcript[data-text]", timeout=TIMEOUT_MS)
    text = page.get_attribute("#transcript", "data-text")
    words = page.eval_on_selector_all(
        "#transcript .word",
        "spans => spans.map(s => ({word: s.textContent, low: s.classList.contains('low')}))",
    )
    return text, words


def _played(page) -> tuple[str, bytes]:
    kind, data = page.evaluate(PLAYER_BYTES)
    return kind, base64.b64decode(data)


def test_page_loads_and_transcribes_an_upload(server, wav):
    with open_page() as (page, errors):
        failed = []
        page.on("response", lambda r: r.status >= 400 and failed.append((r.status, r.url)))
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]", timeout=TIMEOUT_MS)
        assert page.title() == "asr-lightning"
        page.set_input_files("#file", str(wav))
        text, words = _shown(page)
        answer = _invoke(server, wav.read_bytes(), "audio/wav")
        assert text == answer["text"] and text
        assert words == [{"word": w["word"], "low": w["confidence"] < 0.5} for w in answer["words"]]
        assert page.text_content("#status") == "Done."
        # each word lights up while it plays: seek into the middle of one
        target = len(answer["words"]) // 2
        word = answer["words"][target]
        page.wait_for_function("document.getElementById('player').readyState >= 1")
        page.evaluate(
            "t => { document.getElementById('player').currentTime = t; }",
            (word["start"] + word["end"]) / 2,
        )
        page.wait_for_selector(f"#transcript .word:nth-child({target + 1}).current")
        assert page.eval_on_selector_all("#transcript .word.current", "s => s.length") == 1
        static = [f"{server.url}/static/{name}" for name in ("app.js", "style.css")]
        for url in static:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
        assert not failed and not errors.messages, (failed, errors.messages)


def test_live_mode_streams_the_microphone(server, wav):
    """Chromium's fake microphone plays the WAV; the page streams it to /stream."""
    with open_page(fake_microphone_args(wav)) as (page, errors):
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]", timeout=TIMEOUT_MS)
        page.click("#live")
        page.wait_for_selector("#partial[data-count]", timeout=TIMEOUT_MS)  # a partial came
        page.wait_for_timeout(500)
        page.click("#live")  # stop: {"event": "end"}, then the final
        text, words = _shown(page)
        assert text and page.text_content("#status") == "Done."
        kind, played = _played(page)  # the page plays back exactly what it sent
        assert kind == "audio/wav" and len(played) > 44 + 16_000  # over 0.5 s at 16 kHz
        samples, rate = sf.read(io.BytesIO(played))
        assert rate == 16_000 and abs(samples).max() > 0.05  # the speech, not silence
        answer = _invoke(server, played, "audio/wav")
        assert text == answer["text"]
        assert [w["word"] for w in words] == [w["word"] for w in answer["words"]]
        assert page.is_enabled("#live") and not errors.messages, errors.messages


def test_record_mode_posts_the_recording(server, wav):
    with open_page(fake_microphone_args(wav)) as (page, errors):
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]", timeout=TIMEOUT_MS)
        page.click("#record")
        page.wait_for_timeout(1500)
        page.click("#record")  # stop: the recording is posted to /invocations
        text, _ = _shown(page)
        kind, recording = _played(page)
        assert kind in ("audio/webm", "audio/ogg", "audio/mp4")
        assert text == _invoke(server, recording, kind)["text"] and text
        assert not errors.messages, errors.messages
