"""Live transcription over ``/stream``: the protocol's logic without the WebSocket.

A client opens ``/stream?sample_rate=16000``, sends binary frames of 16-bit little-endian mono
PCM at that rate, then the text frame ``{"event": "end"}``. The server answers
``{"partial": "...", "duration_s": ...}`` frames while audio arrives (``duration_s``: the
seconds of audio the partial covers, from the start of the stream) and one ``{"final": "...",
"words": [...], "confidence": ..., "duration_s": ...}`` at the end, then closes (code 1000).

:class:`StreamSession` holds one stream: its PCM, when a partial is due, and the samples each
decode gets. The final decodes the whole stream exactly as ``/invocations`` decodes the same
PCM sent as ``{"audio": <base64>, "sample_rate": R, "encoding": "pcm_s16le"}`` (one call of
:func:`asr_lightning.serve.requests._decode_pcm` on all of it), so the final transcript equals
the offline one. Partials are a preview:

- one is started once ``partial_interval_s`` of new audio has arrived and the previous one is
  answered (never two at a time per stream; a model slower than the audio skips ahead, since a
  partial always decodes the audio received so far);
- up to ``partial_window_s`` of audio a partial decodes all of it; beyond, only its last
  ``partial_window_s`` (the cost of a partial stays bounded however long the stream). Words of
  earlier partials that start before the new window (plus ``WINDOW_MARGIN_S``, where a cut
  word is unreliable) are kept as they were, and the window's words after that point follow.

Every refusal is a :class:`StreamError`: an HTTP-like status for the JSON error frame
``{"error": ..., "status": ...}`` and the WebSocket close code that follows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_lightning.decoding.decoder import Word
from asr_lightning.errors import AsrLightningError, ConfigError
from asr_lightning.serve import requests as rq

#: WebSocket close codes (RFC 6455 section 7.4.1, and 1013 of the IANA registry).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
#: The text frame that ends the audio.
END_EVENT = "end"
BYTES_PER_SAMPLE = 2
#: Seconds after a partial window's start where its words are not trusted (a word cut by the
#: window's edge decodes badly): earlier partials' words are kept up to there.
WINDOW_MARGIN_S = 1.0

#: The error frame's status of a client idle longer than the server's ``read_timeout_s``.
IDLE_STATUS = 408
#: Outcomes of ``asr_streams_total{outcome}``.
OUTCOME_COMPLETED = "completed"
OUTCOME_DISCONNECTED = "disconnected"
OUTCOME_BAD_REQUEST = "bad_request"
OUTCOME_TIMEOUT = "timeout"
OUTCOME_TOO_LONG = "too_long"
OUTCOME_REFUSED = "refused"
OUTCOME_FAILED = "failed"


@dataclass(frozen=True)
class StreamOptions:
    """How ``/stream`` previews and limits a stream (the idle timeout is the server's
    ``read_timeout_s``).

    Args:
        partial_interval_s: Seconds of new audio between two partials (at most one partial in
            flight).
        partial_window_s: Partials of longer streams decode only their last this many seconds.
        max_duration_s: Streams longer than this are closed with an error (1009).
    """

    partial_interval_s: float = 0.5
    partial_window_s: float = 20.0
    max_duration_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("partial_interval_s", "partial_window_s", "max_duration_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.partial_window_s <= WINDOW_MARGIN_S:
            raise ConfigError(
                f"partial_window_s must be > {WINDOW_MARGIN_S} s, got {self.partial_window_s}"
            )


DEFAULT_STREAM_OPTIONS = StreamOptions()


class StreamError(AsrLightningError):
    """A stream refused or ended: the error frame's status, and the close code after it."""

    def __init__(self, status: int, message: str, code: int, outcome: str) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.outcome = outcome
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error frame: ``{"error": message, "status": status}``."""
        return {"error": self.message, "status": self.status}


def bad_request(message: str) -> StreamError:
    return StreamError(rq.BAD_REQUEST, message, CLOSE_POLICY_VIOLATION, OUTCOME_BAD_REQUEST)


def draining_error() -> StreamError:
    return StreamError(
        rq.UNAVAILABLE,
        "the server is shutting down: reconnect elsewhere",
        CLOSE_TRY_AGAIN_LATER,
        OUTCOME_REFUSED,
    )


def idle_error(timeout_s: float) -> StreamError:
    return StreamError(
        IDLE_STATUS,
        f'no frame for {timeout_s:g} s: send audio continuously, then {{"event": "end"}}',
        CLOSE_POLICY_VIOLATION,
        OUTCOME_TIMEOUT,
    )


def failed_error(message: str) -> StreamError:
    return StreamError(rq.INTERNAL_ERROR, message, CLOSE_INTERNAL_ERROR, OUTCOME_FAILED)


def parse_sample_rate(value: str | None) -> int:
    """The ``sample_rate`` query parameter, in Hz (required, an integer in range)."""
    if value is None or value == "":
        raise bad_request("give the PCM's rate: /stream?sample_rate=16000")
    try:
        rate = int(value)
    except ValueError:
        raise bad_request(f"sample_rate must be an integer in Hz, got {value!r}") from None
    if not rq.MIN_PCM_RATE <= rate <= rq.MAX_PCM_RATE:
        raise bad_request(f"sample_rate {rate} is outside {rq.MIN_PCM_RATE}..{rq.MAX_PCM_RATE} Hz")
    return rate


def parse_event(text: str) -> str:
    """The event of a text frame; only ``{"event": "end"}`` is known."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise bad_request(f'text frames must be JSON {{"event": "end"}}: {err}') from err
    if not isinstance(document, dict) or document.get("event") != END_EVENT or len(document) != 1:
        raise bad_request(
            f'unknown text frame {text[:100]!r}: the only one is {{"event": "end"}}; '
            "send audio as binary frames"
        )
    return END_EVENT


@dataclass(frozen=True)
class PartialRequest:
    """The samples one partial decodes, and where they start in the stream."""

    audio: np.ndarray
    """``(n,)`` float32 at the model's rate."""
    offset_s: float
    """Seconds of the stream before ``audio``'s first sample."""
    duration_s: float
    """Seconds of the stream received when the partial started (where ``audio`` ends)."""


class StreamSession:
    """One stream's PCM, its partial schedule and its limits (no I/O)."""

    def __init__(
        self, rate: int, model_rate: int, options: StreamOptions = DEFAULT_STREAM_OPTIONS
    ) -> None:
        """
        Args:
            rate: the client's PCM rate, in Hz.
            model_rate: the model's sampling rate, in Hz.
            options: partials and limits.
        """
        self.rate = rate
        self.model_rate = model_rate
        self.options = options
        self._pcm = bytearray()
        self._partial_at = 0  # bytes received when the last partial started
        self._partial_in_flight = False
        self._kept: list[Word] = []  # words of earlier windows kept as they were
        self._kept_until_s = 0.0
        self._last_words: list[Word] = []  # the last partial's words, in stream time

    @property
    def samples(self) -> int:
        """Samples received (at the client's rate)."""
        return len(self._pcm) // BYTES_PER_SAMPLE

    @property
    def duration_s(self) -> float:
        return self.samples / self.rate

    def feed(self, frame: bytes) -> None:
        """Adds a binary frame of PCM (whole samples; within the maximum duration)."""
        if len(frame) % BYTES_PER_SAMPLE:
            raise bad_request(
                f"binary frames must hold whole 16-bit samples, got {len(frame)} bytes"
            )
        limit = self.options.max_duration_s
        if (len(self._pcm) + len(frame)) / BYTES_PER_SAMPLE / self.rate > limit:
            raise StreamError(
                rq.PAYLOAD_TOO_LARGE,
                f"the stream is over the limit of {limit:g} s: end it and start a new one",
                CLOSE_TOO_BIG,
                OUTCOME_TOO_LONG,
            )
        self._pcm += frame

    def partial_due(self) -> bool:
        """Whether a partial should start now (enough new audio, none in flight)."""
        if self._partial_in_flight:
            return False
        new = (len(self._pcm) - self._partial_at) / BYTES_PER_SAMPLE / self.rate
        return new >= self.options.partial_interval_s

    def start_partial(self) -> PartialRequest:
        """The samples of the partial starting now (the trailing window of a long stream)."""
        self._partial_in_flight = True
        self._partial_at = len(self._pcm)
        window = int(self.options.partial_window_s * self.rate) * BYTES_PER_SAMPLE
        start = max(0, len(self._pcm) - window)
        audio = rq._decode_pcm(bytes(self._pcm[start:]), self.rate, self.model_rate)
        return PartialRequest(audio, start / BYTES_PER_SAMPLE / self.rate, self.duration_s)

    def finish_partial(self, request: PartialRequest, text: str, words: list[Word]) -> str:
        """The partial text of ``request``, decoded as ``text`` and ``words`` (times within its
        window)."""
        self._partial_in_flight = False
        shifted = [
            Word(w.word, w.start + request.offset_s, w.end + request.offset_s, w.confidence)
            for w in words
        ]
        if request.offset_s > 0:  # a window: keep what earlier partials saw before it
            until = request.offset_s + WINDOW_MARGIN_S
            if until > self._kept_until_s:
                self._kept += [w for w in self._last_words if self._kept_until_s <= w.start < until]
                self._kept_until_s = until
            shifted = [w for w in shifted if w.start >= self._kept_until_s]
        self._last_words = [*self._kept, *shifted]
        if request.offset_s == 0:
            return text
        return " ".join(w.word for w in self._last_words)

    def cancel_partial(self) -> None:
        self._partial_in_flight = False

    def final_audio(self) -> np.ndarray:
        """All the stream's samples at the model's rate, as ``/invocations`` decodes them."""
        if not self._pcm:
            return np.zeros(0, dtype=np.float32)
        return rq._decode_pcm(bytes(self._pcm), self.rate, self.model_rate)


def final_frame(transcript: Any) -> dict[str, Any]:
    """The last frame of a stream: its transcript with word timestamps (500 on an error)."""
    try:
        body = rq.transcript_body(transcript, timestamps=True)
    except rq.RequestError as err:
        raise failed_error(err.message) from err
    return {
        "final": body["text"],
        "words": body["words"],
        "confidence": body["confidence"],
        "duration_s": body["duration_s"],
    }
