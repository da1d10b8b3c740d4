"""One request contract for the HTTP server and the SageMaker handler: body in, samples out.

Both runtimes turn an ``/invocations`` request into a :class:`ParsedRequest` here, and a
:class:`~asr_lightning.inference.transcriber.Transcript` (or a :class:`RequestError`) into the
answer here, so they give identical answers. Accepted bodies:

- an audio file (``audio/wav``, ``audio/x-wav``, ``audio/flac``, ``audio/ogg``, ``audio/mpeg``,
  ``audio/webm``, ``audio/mp4``..., or ``application/octet-stream``), read by the decoder chain
  of :func:`asr_lightning.audio.decode.load_audio` at any sampling rate;
- ``application/json``: ``{"audio": <base64>, "sample_rate": 8000, "encoding": "pcm_s16le",
  "timestamps": true}``. Without ``sample_rate`` the bytes are an encoded file; with it they are
  raw 16-bit little-endian mono PCM at that rate (``encoding`` says so explicitly).

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

from asr_lightning.audio.decode import SAMPLE_RATE, Backend, load_audio, resample
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
#: Decoders tried on request audio: libsndfile in process, then ffmpeg for everything else. The
#: chain's ``librosa`` step re-runs libsndfile and then audioread (ffmpeg again), so it reads
#: nothing new, and importing it took 2-3 s on the first undecodable request.
DECODERS: tuple[Backend, ...] = ("soundfile", "ffmpeg")
#: ``Accept`` values answered (everything is answered as JSON).
ACCEPT_TYPES = frozenset({JSON_TYPE, "*/*", "application/*"})
PCM_ENCODING = "pcm_s16le"
FILE_ENCODING = "file"
JSON_FIELDS = ("audio", "sample_rate", "encoding", "timestamps")
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
    data = _base64_audio(document.get("audio"))
    rate = document.get("sample_rate")
    encoding = document.get("encoding", FILE_ENCODING if rate is None else PCM_ENCODING)
    asked = document.get("timestamps", False)
    if not isinstance(asked, bool):
        raise RequestError(BAD_REQUEST, f'"timestamps" must be true or false, got {asked!r}')
    if encoding == FILE_ENCODING:
        return ParsedRequest(_decode_file(data, sample_rate), timestamps or asked)
    if encoding != PCM_ENCODING:
        raise RequestError(
            BAD_REQUEST,
            f'"encoding" must be "{PCM_ENCODING}" or "{FILE_ENCODING}", got {encoding!r}',
        )
    return ParsedRequest(_decode_pcm(data, rate, sample_rate), timestamps or asked)


def _base64_audio(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise RequestError(BAD_REQUEST, '"audio" must be a non-empty base64 string')
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(BAD_REQUEST, f'"audio" is not valid base64: {err}') from err
    if not data:
        raise RequestError(BAD_REQUEST, '"audio" decodes to zero bytes')
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
        return load_audio(data, sample_rate=sample_rate, backends=DECODERS)
    except (AudioDecodeError, ConfigError) as err:
        raise RequestError(BAD_REQUEST, f"cannot read the audio: {err}") from err


def transcript_body(transcript: Any, timestamps: bool) -> dict[str, Any]:
    """The answer to a transcribed request: ``{"text": ...}`` (+ ``words``, ``duration_s``).

    A transcript with an ``error`` (the model failed on valid audio) is a 500.
    """
    if transcript.error:
        raise RequestError(INTERNAL_ERROR, f"transcription failed: {transcript.error}")
    body: dict[str, Any] = {"text": transcript.text}
    if timestamps:
        body["words"] = [_word_dict(word) for word in transcript.words]
        body["duration_s"] = transcript.duration_s
    return body


def _word_dict(word: Any) -> Mapping[str, Any]:
    return {"word": word.word, "start": word.start, "end": word.end}


def encode_json(document: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON, the one serialisation of answers and errors."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8")
