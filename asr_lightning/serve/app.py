"""The server's logic without HTTP: request bodies in, ``(status, JSON answer)`` out.

:class:`ServingApp` holds the one :class:`~asr_lightning.inference.transcriber.Transcriber`, the
dynamic batcher in front of it, the metrics and the draining flag. The ASGI app
(:mod:`asr_lightning.serve.asgi`) awaits :meth:`ServingApp.invoke_async`; the SageMaker handler
and tests may call the blocking :meth:`ServingApp.invoke`. Both read bodies with
:mod:`asr_lightning.serve.requests`, so every runtime gives identical answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np

from asr_lightning.errors import ConfigError
from asr_lightning.inference.transcriber import Transcriber, Transcript
from asr_lightning.serve import requests as rq
from asr_lightning.serve.batching import BatchOptions, DynamicBatcher
from asr_lightning.serve.metrics import ServeMetrics
from asr_lightning.serve.streaming import DEFAULT_STREAM_OPTIONS, StreamOptions

log = logging.getLogger(__name__)

#: Seconds a request waits for its transcript before a 503.
REQUEST_TIMEOUT_S = 300.0
#: Seconds a client has to send a declared body before a 408 (slow clients hold no thread,
#: but their half-sent bodies do hold memory and a connection slot).
READ_TIMEOUT_S = 60.0
#: Seconds a draining server (SIGTERM) waits for requests in flight before it exits anyway.
SHUTDOWN_TIMEOUT_S = 30.0
#: Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 5.0


@dataclass(frozen=True)
class ServeOptions:
    """What the server accepts, how it batches and how it protects itself."""

    batching: BatchOptions = BatchOptions()
    """Dynamic batching (``max_batch_size=1``: off)."""
    max_body_bytes: int = rq.DEFAULT_MAX_BODY_BYTES
    """Larger request bodies get 413 without being read."""
    request_timeout_s: float = REQUEST_TIMEOUT_S
    """Seconds a request may wait for the model before a 503."""
    read_timeout_s: float = READ_TIMEOUT_S
    """Seconds a client has to send its declared body before a 408."""
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S
    """Bound on draining at SIGTERM: requests in flight get this long to finish."""
    keep_alive_s: float = KEEP_ALIVE_S
    """Seconds an idle keep-alive connection is kept."""
    streams: StreamOptions = DEFAULT_STREAM_OPTIONS
    """How ``/stream`` sends partials and how long a stream may be."""
    max_concurrent: int | None = None
    """Requests and streams answered at once beyond which new ones get 503 (``None``: no
    cap). Idle and slow connections cost a socket each, not a thread, and are not counted."""

    def __post_init__(self) -> None:
        for name in ("request_timeout_s", "read_timeout_s", "shutdown_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"max_concurrent must be >= 1, got {self.max_concurrent}")


class ServingApp:
    """The model behind the server: parsing, batching, answers, metrics and draining."""

    def __init__(self, transcriber: Transcriber, options: ServeOptions = ServeOptions()) -> None:
        """
        Args:
            transcriber: the loaded model (its ``batch_size`` should be >= the max batch size).
            options: limits, batching and shutdown.
        """
        self.transcriber = transcriber
        self.options = options
        self.metrics = ServeMetrics(options.batching.max_batch_size)
        self.batcher = DynamicBatcher(
            transcriber.transcribe_arrays, options.batching, on_batch=self.metrics.observe_batch
        )
        self.draining = False
        """Set at SIGTERM: new requests get 503 while those in flight finish."""
        self.in_flight = 0
        """Requests and streams being answered (kept by the ASGI app)."""

    def ping(self) -> tuple[int, dict[str, Any]]:
        """200 while serving; 503 while draining, so that a load balancer stops sending."""
        if self.draining:
            return rq.UNAVAILABLE, self.draining_error().to_dict()
        return 200, {"status": "ok", "backend": self.transcriber.backend.name, "pid": os.getpid()}

    @staticmethod
    def draining_error() -> rq.RequestError:
        return rq.RequestError(rq.UNAVAILABLE, "the server is shutting down: retry elsewhere")

    def busy_error(self) -> rq.RequestError:
        return rq.RequestError(
            rq.UNAVAILABLE,
            f"{self.options.max_concurrent} requests are being answered already: retry later",
        )

    def submit(self, audio: np.ndarray) -> Future:
        """A future of one clip's :class:`Transcript`, from the batcher."""
        future = self.batcher.submit(audio)
        self.metrics.queue_depth.set(self.batcher.queue_depth)
        return future

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, attributes: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Status and JSON answer of one ``/invocations`` body (blocks until answered)."""
        try:
            request = self._parse(body, content_type, accept, attributes)
            future = self.submit(request.audio)
            try:
                transcript = future.result(timeout=self.options.request_timeout_s)
            except FutureTimeout:
                future.cancel()
                raise self._overloaded() from None
            except Exception as err:  # the model failed on this clip alone
                raise self._failed(err) from err
            return 200, self._answer(request, transcript)
        except rq.RequestError as err:
            return err.status, err.to_dict()

    async def invoke_async(
        self, body: bytes, content_type: str | None, accept: str | None, attributes: str | None
    ) -> tuple[int, dict[str, Any]]:
        """:meth:`invoke` for an event loop: decoding runs in a thread, the model in the
        batcher's, and the loop only waits."""
        from starlette.concurrency import run_in_threadpool

        try:
            request = await run_in_threadpool(self._parse, body, content_type, accept, attributes)
            future = asyncio.wrap_future(self.submit(request.audio))
            try:
                transcript = await asyncio.wait_for(future, self.options.request_timeout_s)
            except asyncio.TimeoutError:  # wait_for cancelled the clip: the batcher skips it
                raise self._overloaded() from None
            except Exception as err:
                raise self._failed(err) from err
            return 200, self._answer(request, transcript)
        except rq.RequestError as err:
            return err.status, err.to_dict()

    def _parse(
        self, body: bytes, content_type: str | None, accept: str | None, attributes: str | None
    ) -> rq.ParsedRequest:
        rq.check_accept(accept)
        return rq.parse_request(
            body,
            content_type,
            self.transcriber.sample_rate,
            timestamps=rq.wants_timestamps(attributes),
        )

    def _answer(self, request: rq.ParsedRequest, transcript: Transcript) -> dict[str, Any]:
        body = rq.transcript_body(transcript, request.timestamps)
        self.metrics.audio_seconds.inc(transcript.duration_s)
        return body

    @staticmethod
    def _overloaded() -> rq.RequestError:
        return rq.RequestError(rq.UNAVAILABLE, "the model is overloaded: retry later")

    @staticmethod
    def _failed(err: Exception) -> rq.RequestError:
        log.error("inference failed: %s: %s", type(err).__name__, err)
        return rq.RequestError(rq.INTERNAL_ERROR, f"inference failed: {type(err).__name__}: {err}")

    def close(self) -> None:
        """Stops the batcher once the clips it holds are answered."""
        self.batcher.close()
