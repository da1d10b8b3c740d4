"""One request contract for the HTTP server and the SageMaker handler: body in, samples out.

Both runtimes turn an ``/invocations`` request into a :class:`ParsedRequest` here, and a
:class:`~asr_lightning.inference.transcriber.Transcript` (or a :class:`RequestError`) into the
answer here, so they give identical answers. Accepted bodies:

- an audio file (``audio/wav``, ``audio/x-wav``, ``audio/flac``, ``audio/ogg``, ``audio/mpeg``,
  ``audio/webm``, ``audio/mp4``..., or ``application/octet-stream``), read by the decoder chain
  of :func:`asr_lightning.audio.decode.load_audio` at any sampling rate;
- ``application/json``: ``{"audio": <base64>, "sample_rate": 8000, "encoding": "pcm_s16le",
  "timestamps": true}``, or the seed recipe's ``{"base64": <base64>, "sample_rate": 16000}``
  (``base64`` is another name for ``audio``). Bytes that start with a container signature
  (RIFF/WAVE, FLAC, Ogg, ID3 or an MPEG frame, ISO-BMFF ``ftyp``, EBML/WebM, AIFF, NIST SPHERE)
  are decoded as a file at its own rate, ``sample_rate`` being only a hint; other bytes are raw
  16-bit little-endian mono PCM at ``sample_rate`` (``encoding`` says which explicitly).

Every body is read by the same decoder chain as every other runtime
(:func:`asr_lightning.audio.decode.load_audio`), and the Transcriber applies the model's level
normalization.

Word timestamps are asked for by ``"timestamps": true`` in JSON, or ``timestamps=true`` in
SageMaker's custom attributes (``CustomAttributes`` of ``invoke_endpoint``; the
``X-Amzn-SageMaker-Custom-Attributes`` header) or the query string.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_lightning.audio.decode import SAMPLE_RATE, load_audio, resample
from asr_lightning.errors import AsrLightningError, AudioDecodeError, ConfigError

JSON_TYPE = "application/json"
#: Encoded audio files; the decoder chain reads all of them (ffmpeg for MP4/AAC and WebM).
AUDIO_TYPES = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "audio/mpeg",
        "audio/mp3",
        "audio/webm",
        "audio/mp4",
        "audio/m4a",
        "audio/x-m4a",
        "audio/aac",
        "audio/aiff",
        "audio/x-aiff",
        "application/octet-stream",
    }
)
#: ``Accept`` values answered (everything is answered as JSON).
ACCEPT_TYPES = frozenset({JSON_TYPE, "*/*", "application/*"})
PCM_ENCODING = "pcm_s16le"
FILE_ENCODING = "file"
AUDIO_FIELDS = ("audio", "base64")  # base64: the seed recipe's name
JSON_FIELDS = (*AUDIO_FIELDS, "sample_rate", "encoding", "timestamps")
#: Leading bytes of audio containers (``None`` matches any byte): WAV, FLAC, Ogg, MP3 with an
#: ID3 tag, MP4/M4A (``ftyp`` at offset 4), Matroska/WebM, AIFF, NIST SPHERE.
CONTAINER_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"RIFF"),
    (0, b"RF64"),
    (0, b"fLaC"),
    (0, b"OggS"),
    (0, b"ID3"),
    (4, b"ftyp"),
    (0, b"\x1a\x45\xdf\xa3"),
    (0, b"FORM"),
    (0, b"NIST_1A"),
)
#: Sampling rates accepted for raw PCM, in Hz.
MIN_PCM_RATE = 1_000
MAX_PCM_RATE = 384_000
#: Default request size limit: 16 MiB (about 8 minutes of 16 kHz 16-bit WAV).
DEFAULT_MAX_BODY_MB = 16.0
DEFAULT_MAX_BODY_BYTES = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})

BAD_REQUEST = 400
NOT_FOUND = 404
METHOD_NOT_ALLOWED = 405
NOT_ACCEPTABLE = 406
LENGTH_REQUIRED = 411
PAYLOAD_TOO_LARGE = 413
UNSUPPORTED_MEDIA_TYPE = 415
INTERNAL_ERROR = 500
UNAVAILABLE = 503


class RequestError(AsrLightningError):
    """A request that cannot be answered, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": message, "status": status}``."""
        return {"error": self.message, "status": self.status}


@dataclass(frozen=True)
class ParsedRequest:
    """What a valid request asks for."""

    audio: np.ndarray
    """``(n,)`` float32 mono samples at the model's sampling rate."""
    timestamps: bool = False
    """Answer with word timestamps too."""


def media_type(content_type: str | None) -> str:
    """``audio/wav`` of ``Audio/WAV; charset=binary`` (lower case, parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_accept(accept: str | None) -> None:
    """Raises 406 unless ``accept`` allows a JSON answer (a missing header does)."""
    if not accept:
        return
    offered = {media_type(part) for part in accept.split(",")}
    if not offered & ACCEPT_TYPES:
        raise RequestError(
            NOT_ACCEPTABLE, f"cannot answer as {accept!r}: answers are {JSON_TYPE} only"
        )


def check_content_length(length: str | int | None, max_bytes: int) -> int:
    """The declared body size, checked before the body is read (411 missing, 413 too large)."""
    if length is None or length == "":
        raise RequestError(LENGTH_REQUIRED, "send a Content-Length header (no chunked bodies)")
    try:
        size = int(length)
    except ValueError:
        raise RequestError(BAD_REQUEST, f"invalid Content-Length {length!r}") from None
    if size < 0:
        raise RequestError(BAD_REQUEST, f"invalid Content-Length {length!r}")
    if size > max_bytes:
        raise RequestError(
            PAYLOAD_TOO_LARGE,
            f"request body of {size} bytes is over the limit of {max_bytes} bytes: "
            "send a shorter clip or a compressed format (FLAC, Opus), or raise --max-body-mb",
        )
    return size


def wants_timestamps(attributes: str | None) -> bool:
    """``timestamps=true`` in SageMaker custom attributes or a query string (``a=1;b=2``)."""
    for pair in (attributes or "").replace("&", ";").replace(",", ";").split(";"):
        key, _, value = pair.partition("=")
        if key.strip().lower() == "timestamps" and value.strip().lower() in TRUE_WORDS:
            return True
    return False


def parse_request(
    body: bytes | str,
    content_type: str | None,
    sample_rate: int = SAMPLE_RATE,
    timestamps: bool = False,
) -> ParsedRequest:
    """Samples of an ``/invocations`` body, or a :class:`RequestError` with a 4xx status.

    Args:
        body: the request body (``str`` when a server already decoded JSON as UTF-8).
        content_type: the ``Content-Type`` header.
        sample_rate: the model's sampling rate, in Hz.
        timestamps: word timestamps were asked for outside the body (custom attributes).
    """
    kind = media_type(content_type)
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not body:
        raise RequestError(BAD_REQUEST, "empty request body: send audio")
    if kind == JSON_TYPE:
        return _parse_json(body, sample_rate, timestamps)
    if kind in AUDIO_TYPES:
        return ParsedRequest(_decode_file(body, sample_rate), timestamps)
    accepted = ", ".join([JSON_TYPE, *sorted(AUDIO_TYPES)])
    raise RequestError(
        UNSUPPORTED_MEDIA_TYPE,
        f"unsupported Content-Type {content_type!r}; send one of: {accepted}",
    )


def _parse_json(body: bytes, sample_rate: int, timestamps: bool) -> ParsedRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(BAD_REQUEST, f"malformed JSON body: {err}") from err
    if not isinstance(document, dict):
        raise RequestError(BAD_REQUEST, 'the JSON body must be an object: {"audio": <base64>}')
    unknown = sorted(set(document) - set(JSON_FIELDS))
    if unknown:
        raise RequestError(
            BAD_REQUEST, f"unknown JSON fields {unknown}; accepted: {list(JSON_FIELDS)}"
        )
    named = [field for field in AUDIO_FIELDS if field in document]
    if len(named) != 1:
        raise RequestError(
            BAD_REQUEST,
            'give the audio as "audio" (or "base64", the same) exactly once, got '
            f"{named or 'neither'}",
        )
    data = _base64_audio(document[named[0]], named[0])
    rate = document.get("sample_rate")
    asked = document.get("timestamps", False)
    if not isinstance(asked, bool):
        raise RequestError(BAD_REQUEST, f'"timestamps" must be true or false, got {asked!r}')
    encoding = document.get("encoding")
    if encoding is None and rate is not None and not _has_signature(data) and _mpeg_frame(data):
        # MPEG frame sync without a container: an MP3, or raw PCM that happens to look like one
        try:
            return ParsedRequest(load_audio(data, sample_rate=sample_rate), timestamps or asked)
        except (AudioDecodeError, ConfigError):
            encoding = PCM_ENCODING
    if encoding is None:  # decide from the bytes: a container is a file, else raw PCM
        encoding = FILE_ENCODING if rate is None or is_container(data) else PCM_ENCODING
    if encoding == FILE_ENCODING:
        return ParsedRequest(_decode_file(data, sample_rate), timestamps or asked)
    if encoding != PCM_ENCODING:
        raise RequestError(
            BAD_REQUEST,
            f'"encoding" must be "{PCM_ENCODING}" or "{FILE_ENCODING}", got {encoding!r}',
        )
    return ParsedRequest(_decode_pcm(data, rate, sample_rate), timestamps or asked)


def is_container(data: bytes) -> bool:
    """Whether ``data`` starts like an audio file (see :data:`CONTAINER_SIGNATURES`), or with
    an MPEG audio frame header (MP3 without an ID3 tag, ADTS AAC)."""
    return _has_signature(data) or _mpeg_frame(data)


def _has_signature(data: bytes) -> bool:
    return any(
        data[offset : offset + len(magic)] == magic for offset, magic in CONTAINER_SIGNATURES
    )


def _mpeg_frame(data: bytes) -> bool:
    """An MPEG audio (or ADTS AAC) frame header: 11 sync bits, and valid version, layer,
    bitrate and sampling-rate fields (raw PCM rarely passes all four)."""
    header = data[:4]
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version, layer = (header[1] >> 3) & 0b11, (header[1] >> 1) & 0b11
    if layer == 0b00:  # ADTS (AAC): layer 0, sampling index below 13
        return (header[2] >> 2) & 0x0F < 13
    bitrate, rate = header[2] >> 4, (header[2] >> 2) & 0b11
    return version != 0b01 and bitrate not in (0b0000, 0b1111) and rate != 0b11


def _base64_audio(value: Any, field: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise RequestError(BAD_REQUEST, f'"{field}" must be a non-empty base64 string')
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(BAD_REQUEST, f'"{field}" is not valid base64: {err}') from err
    if not data:
        raise RequestError(BAD_REQUEST, f'"{field}" decodes to zero bytes')
    return data


def _decode_pcm(data: bytes, rate: Any, sample_rate: int) -> np.ndarray:
    """Raw 16-bit little-endian mono PCM at ``rate`` -> float32 at ``sample_rate``."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise RequestError(
            BAD_REQUEST, f'raw PCM needs an integer "sample_rate" in Hz, got {rate!r}'
        )
    if not MIN_PCM_RATE <= rate <= MAX_PCM_RATE:
        raise RequestError(
            BAD_REQUEST,
            f'"sample_rate" {rate} is outside {MIN_PCM_RATE}..{MAX_PCM_RATE} Hz',
        )
    if len(data) % 2:
        raise RequestError(
            BAD_REQUEST,
            f"raw {PCM_ENCODING} audio must hold whole 2-byte samples, got {len(data)} bytes",
        )
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0  # (n,)
    return resample(samples, rate, sample_rate) if rate != sample_rate else samples


def _decode_file(data: bytes, sample_rate: int) -> np.ndarray:
    try:
        return load_audio(data, sample_rate=sample_rate)
    except (AudioDecodeError, ConfigError) as err:
        raise RequestError(BAD_REQUEST, f"cannot read the audio: {err}") from err


def transcript_body(transcript: Any, timestamps: bool) -> dict[str, Any]:
    """The answer to a transcribed request: ``{"text": ..., "confidence": ...}`` (+ ``words``
    with their times and confidences, and ``duration_s``).

    A transcript with an ``error`` (the model failed on valid audio) is a 500.
    """
    if transcript.error:
        raise RequestError(INTERNAL_ERROR, f"transcription failed: {transcript.error}")
    body: dict[str, Any] = {"text": transcript.text, "confidence": transcript.confidence}
    if timestamps:
        body["words"] = [_word_dict(word) for word in transcript.words]
        body["duration_s"] = transcript.duration_s
    return body


def _word_dict(word: Any) -> Mapping[str, Any]:
    return {
        "word": word.word,
        "start": word.start,
        "end": word.end,
        "confidence": word.confidence,
    }


def encode_json(document: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON, the one serialisation of answers and errors."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8")
