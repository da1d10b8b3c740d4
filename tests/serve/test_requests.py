"""Request parsing shared by the server and the SageMaker handler: every content type and error."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from asr_lightning.audio.decode import resample
from asr_lightning.inference.transcriber import Transcript, Word
from asr_lightning.serve.requests import (
    RequestError,
    check_accept,
    check_content_length,
    is_container,
    parse_request,
    transcript_body,
    wants_timestamps,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _status(body, content_type) -> int:
    with pytest.raises(RequestError) as caught:
        parse_request(body, content_type)
    assert caught.value.to_dict() == {"error": caught.value.message, "status": caught.value.status}
    return caught.value.status


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("wav", "audio/wav"),
        ("wav", "audio/x-wav"),
        ("wav", "Audio/WAV; charset=binary"),
        ("flac", "audio/flac"),
        ("opus", "audio/ogg"),
        ("mp3", "audio/mpeg"),
        ("flac", "application/octet-stream"),
    ],
)
def test_audio_files_of_each_type_decode_to_the_clip(encoded, speech, fmt, content_type):
    request = parse_request(encoded[fmt], content_type)
    assert request.audio.dtype == np.float32 and not request.timestamps
    assert abs(request.audio.size - speech.size) < 0.1 * 16_000  # codecs pad a little
    if fmt in ("wav", "flac"):  # lossless
        np.testing.assert_allclose(request.audio, speech, atol=1e-4)


def test_json_base64_file_without_sample_rate(encoded, speech):
    body = json.dumps({"audio": _b64(encoded["flac"]), "timestamps": True})
    request = parse_request(body.encode(), "application/json")
    np.testing.assert_allclose(request.audio, speech, atol=1e-4)
    assert request.timestamps
    assert parse_request(body, "application/json; charset=utf-8").audio.size == speech.size


def test_json_raw_pcm_at_16k_and_resampled_from_8k(encoded, speech):
    request = parse_request(
        json.dumps({"audio": _b64(encoded["pcm"]), "sample_rate": 16000}), "application/json"
    )
    np.testing.assert_allclose(request.audio, speech, atol=1e-4)

    narrow = (resample(speech, 16_000, 8_000) * 32767).astype("<i2").tobytes()
    body = {"audio": _b64(narrow), "sample_rate": 8000, "encoding": "pcm_s16le"}
    request = parse_request(json.dumps(body), "application/json")
    assert abs(request.audio.size - speech.size) <= 2
    assert np.corrcoef(request.audio[: speech.size - 2], speech[: speech.size - 2])[0, 1] > 0.9


@pytest.mark.parametrize("fmt", ["wav", "flac", "opus", "mp3"])
def test_the_seed_body_takes_a_file_at_its_own_rate_the_sample_rate_a_hint(encoded, speech, fmt):
    """``{"base64": <file>, "sample_rate": 16000}``, the seed recipe's documented body."""
    expected = parse_request(encoded[fmt], "application/octet-stream").audio
    for rate in (16000, 8000, 44100):  # whatever it says, a file is read at its own rate
        body = json.dumps({"base64": _b64(encoded[fmt]), "sample_rate": rate})
        np.testing.assert_array_equal(parse_request(body, "application/json").audio, expected)


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_a_wav_at_any_rate_in_the_seed_body_is_resampled_from_its_header(speech, rate):
    import io

    import soundfile as sf

    from asr_lightning.audio.decode import load_audio

    buffer = io.BytesIO()
    sf.write(buffer, resample(speech, 16_000, rate), rate, format="WAV", subtype="PCM_16")
    wav = buffer.getvalue()
    body = json.dumps({"base64": _b64(wav), "sample_rate": 16000})
    np.testing.assert_array_equal(parse_request(body, "application/json").audio, load_audio(wav))


def test_containers_are_told_from_raw_pcm(encoded):
    assert all(is_container(encoded[fmt]) for fmt in ("wav", "flac", "opus", "mp3"))
    assert not is_container(encoded["pcm"])
    assert not is_container(b"\xff\xff\xff\xff" * 100)  # silence at -1: no valid MP3 header
    headerless_mp3 = encoded["mp3"][encoded["mp3"].index(b"\xff\xfb") :]  # ID3 tag cut off
    assert is_container(headerless_mp3)


def test_pcm_is_little_endian(encoded):
    samples = np.array([1000, -2000, 32767], dtype="<i2")
    body = json.dumps({"audio": _b64(samples.tobytes()), "sample_rate": 16000})
    audio = parse_request(body, "application/json").audio
    np.testing.assert_allclose(audio, samples / 32768.0)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"audio": 3}',
        b'{"audio": ""}',
        b'{"audio": "%%%not base64%%%"}',
        b'{"audio": "AAA"}',  # bad padding
        b'{"audio": "AAAA", "sample_rate": "16000"}',
        b'{"audio": "AAAA", "sample_rate": 16000.5}',
        b'{"audio": "AAAA", "sample_rate": 50}',
        b'{"audio": "AQID", "sample_rate": 16000}',  # 3 bytes: not whole 16-bit samples
        b'{"audio": "AAAA", "encoding": "mulaw"}',
        b'{"audio": "AAAA", "timestamps": "yes"}',
        b'{"audio": "AAAA", "words": true}',
        b'{"sample_rate": 16000}',
        b'{"audio": "AAAA", "base64": "AAAA"}',  # the audio twice
    ],
)
def test_malformed_json_is_a_400(body):
    assert _status(body, "application/json") == 400


def test_json_base64_of_garbage_is_a_400_naming_the_decoders():
    body = json.dumps({"audio": _b64(b"definitely not audio" * 10)})
    with pytest.raises(RequestError) as caught:
        parse_request(body, "application/json")
    assert caught.value.status == 400 and "soundfile" in caught.value.message


@pytest.mark.parametrize("content_type", ["audio/wav", "application/json", "audio/flac"])
def test_empty_body_is_a_400(content_type):
    assert _status(b"", content_type) == 400


def test_undecodable_and_truncated_audio_are_400(encoded):
    assert _status(b"RIFF" + b"\x00" * 40, "audio/wav") == 400
    assert _status(encoded["flac"][:30], "audio/flac") == 400
    assert _status(b"\x00" * 100, "application/octet-stream") == 400


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "", None, "text/csv"])
def test_unsupported_content_type_is_a_415(encoded, content_type):
    assert _status(encoded["wav"], content_type) == 415


def test_content_length_limits():
    assert check_content_length("100", 1000) == 100
    for length, status in [(None, 411), ("", 411), ("x", 400), ("-1", 400), ("1001", 413)]:
        with pytest.raises(RequestError) as caught:
            check_content_length(length, 1000)
        assert caught.value.status == status
    with pytest.raises(RequestError, match="--max-body-mb"):
        check_content_length(10**9, 1000)


def test_accept_and_timestamp_attributes():
    for accept in (None, "", "application/json", "*/*", "text/html, application/json;q=0.9"):
        check_accept(accept)
    with pytest.raises(RequestError) as caught:
        check_accept("text/csv")
    assert caught.value.status == 406
    assert wants_timestamps("timestamps=true")
    assert wants_timestamps("foo=1; Timestamps=TRUE")
    assert wants_timestamps("a=b&timestamps=1")
    assert not wants_timestamps(None) and not wants_timestamps("timestamps=false")


def test_transcript_bodies():
    words = [Word("go", 0.1, 0.3, 0.9), Word("left", 0.4, 0.8, 0.7)]
    transcript = Transcript("<array 0>", "go left", words, 1.0, confidence=0.8)
    assert transcript_body(transcript, timestamps=False) == {"text": "go left", "confidence": 0.8}
    assert transcript_body(transcript, timestamps=True) == {
        "text": "go left",
        "confidence": 0.8,
        "words": [
            {"word": "go", "start": 0.1, "end": 0.3, "confidence": 0.9},
            {"word": "left", "start": 0.4, "end": 0.8, "confidence": 0.7},
        ],
        "duration_s": 1.0,
    }
    with pytest.raises(RequestError) as caught:
        transcript_body(Transcript("x", "", [], 1.0, "inference failed: boom"), False)
    assert caught.value.status == 500
