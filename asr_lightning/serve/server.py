"""HTTP server with SageMaker's container contract: a local service or a SageMaker BYOC image.

``GET /ping`` answers 200 once the model is loaded; ``POST /invocations`` (and
``POST /endpoints/<name>/invocations``, the path ``sagemaker-runtime`` ``invoke_endpoint``
posts to, so boto3 with ``endpoint_url`` reaches this server directly) transcribes one clip.
Bodies are read by :mod:`asr_lightning.serve.requests` (the SageMaker handler uses the same
code), concurrent requests are batched by :mod:`asr_lightning.serve.batching`, and every error
is a JSON ``{"error": ..., "status": ...}``. The size limit is checked on ``Content-Length``
before the body is read.

Standard library only (``http.server.ThreadingHTTPServer``): one thread per connection, which
is plenty for a model that serves tens of requests a second, and nothing new to install.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.serve import requests as rq
from asr_lightning.serve.batching import BatchOptions, DynamicBatcher

log = logging.getLogger(__name__)

#: SageMaker's container port.
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
#: Seconds a request waits for its transcript before a 503.
REQUEST_TIMEOUT_S = 300.0
#: Seconds to read a declared body before the connection is dropped.
READ_TIMEOUT_S = 60.0
#: Seconds a refused body is read and discarded before the connection is closed.
LINGER_S = 2.0
LINGER_CHUNK_BYTES = 1 << 16
INVOCATION_PATH = re.compile(r"^/(?:endpoints/[^/]+/)?invocations$")
PING_PATHS = ("/ping",)
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


@dataclass(frozen=True)
class ServeOptions:
    """What the server accepts and how it batches."""

    batching: BatchOptions = BatchOptions()
    """Dynamic batching (``max_batch_size=1``: off)."""
    max_body_bytes: int = rq.DEFAULT_MAX_BODY_BYTES
    """Larger request bodies get 413 without being read."""
    request_timeout_s: float = REQUEST_TIMEOUT_S
    """Seconds a request may wait for the model before a 503."""


class ServingApp:
    """The server's logic without HTTP: requests in, ``(status, JSON body)`` out."""

    def __init__(self, transcriber: Transcriber, options: ServeOptions = ServeOptions()) -> None:
        """
        Args:
            transcriber: the loaded model (its ``batch_size`` should be >= the max batch size).
            options: limits and batching.
        """
        self.transcriber = transcriber
        self.options = options
        self.batcher = DynamicBatcher(transcriber.transcribe_arrays, options.batching)

    def ping(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok", "backend": self.transcriber.backend.name}

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, attributes: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Status and JSON answer of one ``/invocations`` body."""
        try:
            rq.check_accept(accept)
            request = rq.parse_request(
                body,
                content_type,
                self.transcriber.sample_rate,
                timestamps=rq.wants_timestamps(attributes),
            )
            future = self.batcher.submit(request.audio)
            try:
                transcript = future.result(timeout=self.options.request_timeout_s)
            except FutureTimeout:
                future.cancel()
                raise rq.RequestError(
                    rq.UNAVAILABLE, "the model is overloaded: retry later"
                ) from None
            except Exception as err:  # the model failed on this clip alone
                log.exception("inference failed")
                raise rq.RequestError(
                    rq.INTERNAL_ERROR, f"inference failed: {type(err).__name__}: {err}"
                ) from err
            return 200, rq.transcript_body(transcript, request.timestamps)
        except rq.RequestError as err:
            return err.status, err.to_dict()

    def close(self) -> None:
        self.batcher.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3 and load balancers expect
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path in PING_PATHS:
            self._send(*self.server.app.ping())
        elif INVOCATION_PATH.match(path):
            self._error(rq.METHOD_NOT_ALLOWED, "POST audio to /invocations")
        else:
            self._error(rq.NOT_FOUND, f"no such path {path!r}: use GET /ping, POST /invocations")

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if not INVOCATION_PATH.match(url.path):
            self._refuse_body(rq.NOT_FOUND, f"no such path {url.path!r}: POST to /invocations")
            return
        if self.headers.get("Transfer-Encoding"):
            self._refuse_body(rq.LENGTH_REQUIRED, "chunked bodies are not accepted")
            return
        try:
            size = rq.check_content_length(
                self.headers.get("Content-Length"), self.server.app.options.max_body_bytes
            )
        except rq.RequestError as err:
            self._refuse_body(err.status, err.message)
            return
        self.connection.settimeout(READ_TIMEOUT_S)
        body = self.rfile.read(size)
        if len(body) < size:
            self.close_connection = True
            return  # the client went away mid-body: nobody to answer
        attributes = ";".join(filter(None, [self.headers.get(CUSTOM_ATTRIBUTES), url.query]))
        self._send(
            *self.server.app.invoke(
                body, self.headers.get("Content-Type"), self.headers.get("Accept"), attributes
            )
        )

    def do_PUT(self) -> None:  # noqa: N802
        self._refuse_body(rq.METHOD_NOT_ALLOWED, "use GET /ping or POST /invocations")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _refuse_body(self, status: int, message: str) -> None:
        """Answers without reading the body, then closes the connection.

        The body still on its way is discarded for at most :data:`LINGER_S` (a lingering close,
        as nginx does): closing on unread data resets the connection, and a client still
        sending would see the reset instead of the answer.
        """
        self.close_connection = True
        self._error(status, message)
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S)
            deadline = time.monotonic() + LINGER_S
            while time.monotonic() < deadline and self.connection.recv(LINGER_CHUNK_BYTES):
                pass
        except OSError:
            pass  # the client is gone or slow: nothing more to do for it

    def _error(self, status: int, message: str) -> None:
        self._send(status, rq.RequestError(status, message).to_dict())

    def _send(self, status: int, document: dict[str, Any]) -> None:
        payload = rq.encode_json(document)
        self.send_response(status)
        self.send_header("Content-Type", rq.JSON_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: ServingApp) -> None:
        self.app = app
        super().__init__(address, _Handler)


class AsrServer:
    """A running (or ready to run) HTTP server around a :class:`ServingApp`."""

    def __init__(self, app: ServingApp, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        """
        Args:
            app: the logic to serve.
            host: interface to listen on (``0.0.0.0`` in a container).
            port: TCP port (0: any free port; see :attr:`port`).
        """
        self.app = app
        self.httpd = _Server((host, port), app)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serves until :meth:`shutdown` (or Ctrl-C in the caller)."""
        self.httpd.serve_forever()

    def start(self) -> AsrServer:
        """Serves in a background thread (tests, benchmarks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="asr-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
        self.app.close()
