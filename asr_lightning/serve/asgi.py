"""The ASGI app (Starlette) of ``asr-lightning serve``, with SageMaker's container contract.

- ``GET /ping``: 200 once the model is loaded, 503 while the server drains at SIGTERM.
- ``POST /invocations`` and ``POST /endpoints/<name>/invocations`` (the path
  ``sagemaker-runtime`` ``invoke_endpoint`` posts to, so boto3 with ``endpoint_url`` reaches
  this server directly): one clip in, ``{"text": ..., "confidence": ...}`` out. The size limit
  is checked on ``Content-Length`` before the body is read (413), chunked bodies get 411, and a
  body that does not arrive within ``read_timeout_s`` gets 408.
- ``GET /metrics``: Prometheus metrics (:mod:`asr_lightning.serve.metrics`).
- ``/stream``: live transcription over a WebSocket (:mod:`asr_lightning.serve.streaming`).
- ``GET /``: the demo page, with its files under ``/static`` (:mod:`asr_lightning.serve.live`).

Every error is a JSON ``{"error": ..., "status": ...}``. Bodies are read and answered by
:class:`~asr_lightning.serve.app.ServingApp`; this module is only the HTTP around it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asr_lightning.serve import requests as rq
from asr_lightning.serve.app import ServingApp
from asr_lightning.serve.live import live_routes
from asr_lightning.serve.metrics import CONTENT_TYPE as METRICS_TYPE
from asr_lightning.serve.metrics import path_label

CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
REQUEST_TIMEOUT = 408
#: Seconds a refused body is still read and discarded after the answer (a lingering close).
LINGER_S = 2.0


def json_response(status: int, document: dict[str, Any], close: bool = False) -> Response:
    """A JSON answer (``close``: and the connection is closed after it)."""
    headers = {"Connection": "close"} if close else None
    return Response(rq.encode_json(document), status, headers, media_type=rq.JSON_TYPE)


def error_response(status: int, message: str, close: bool = False) -> Response:
    return json_response(status, rq.RequestError(status, message).to_dict(), close)


class RefusalResponse(Response):
    """An error answered before the request body is read, then a lingering close.

    The answer goes out at once; the body still on its way is then read and discarded for at
    most :data:`LINGER_S` before the connection is closed, as nginx does: closing on unread
    data resets the connection, and a client still sending would see the reset instead of the
    answer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(
            rq.encode_json(rq.RequestError(status, message).to_dict()),
            status,
            {"Connection": "close"},
            media_type=rq.JSON_TYPE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        with anyio.move_on_after(LINGER_S):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(serving: ServingApp) -> ASGIApp:
    """The ASGI app serving ``serving`` (routes, JSON errors, metrics, draining; the partials
    and limits of ``/stream`` are ``serving.options.streams``)."""

    async def ping(request: Request) -> Response:
        return json_response(*serving.ping())

    async def invocations(request: Request) -> Response:
        if serving.draining:
            return RefusalResponse(rq.UNAVAILABLE, serving.draining_error().message)
        if request.headers.get("transfer-encoding"):
            return RefusalResponse(
                rq.LENGTH_REQUIRED, "chunked bodies are not accepted: send a Content-Length"
            )
        try:
            size = rq.check_content_length(
                request.headers.get("content-length"), serving.options.max_body_bytes
            )
        except rq.RequestError as err:  # refused before a byte of the body is read
            return RefusalResponse(err.status, err.message)
        try:
            body = await _read_body(request, size, serving.options.read_timeout_s)
        except TimeoutError:
            return error_response(
                REQUEST_TIMEOUT,
                f"the {size}-byte body did not arrive within {serving.options.read_timeout_s:g} "
                "s: send it faster, or a compressed format (FLAC, Opus)",
                close=True,
            )
        except ClientDisconnect:
            return Response(status_code=rq.BAD_REQUEST)  # nobody is left to read it
        attributes = ";".join(
            filter(None, [request.headers.get(CUSTOM_ATTRIBUTES), request.url.query])
        )
        status, document = await serving.invoke_async(
            body, request.headers.get("content-type"), request.headers.get("accept"), attributes
        )
        return json_response(status, document)

    async def metrics(request: Request) -> Response:
        return Response(serving.metrics.exposition(), media_type=METRICS_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == rq.NOT_FOUND:
            message = (
                f"no such path {path!r}: use GET /ping, POST /invocations, GET /metrics, "
                "GET / (the demo page), WebSocket /stream"
            )
        elif exc.status_code == rq.METHOD_NOT_ALLOWED and path.endswith("/invocations"):
            message = "POST audio to /invocations"
        elif exc.status_code == rq.METHOD_NOT_ALLOWED:
            message = (
                f"{request.method} is not allowed on {path}: use GET /ping or POST /invocations"
            )
        else:
            message = str(exc.detail)
        if request.method in ("GET", "HEAD"):
            return error_response(exc.status_code, message)
        return RefusalResponse(exc.status_code, message)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/invocations", invocations, methods=["POST"]),
        Route("/endpoints/{name}/invocations", invocations, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
        *live_routes(serving, serving.options.streams),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return _Observed(app, serving)


async def _read_body(request: Request, size: int, timeout_s: float) -> bytes:
    """The declared body, within ``timeout_s`` for all of it (a slow client gets 408)."""
    chunks, received = [], 0
    with anyio.fail_after(timeout_s):
        async for chunk in request.stream():
            chunks.append(chunk)
            received += len(chunk)
    if received < size:
        raise ClientDisconnect()
    return b"".join(chunks)


class _Observed:
    """ASGI middleware: counts requests in flight (for draining) and records their metrics."""

    def __init__(self, app: ASGIApp, serving: ServingApp) -> None:
        self.app = app
        self.serving = serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        metrics, serving = self.serving.metrics, self.serving
        path = path_label(scope["path"])
        status = {"code": 500}
        started = time.perf_counter()

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        limit = serving.options.max_concurrent
        if limit is not None and serving.in_flight >= limit:
            await self._refuse(scope, receive, send, serving.busy_error())
            metrics.requests.labels(path, str(rq.UNAVAILABLE)).inc()
            return
        serving.in_flight += 1
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            serving.in_flight -= 1
            metrics.in_flight.dec()
            if scope["type"] == "http":
                metrics.requests.labels(path, str(status["code"])).inc()
                metrics.latency.labels(path).observe(time.perf_counter() - started)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: rq.RequestError) -> None:
        if scope["type"] == "http":
            await RefusalResponse(error.status, error.message)(scope, receive, send)
        else:  # a WebSocket handshake: refused with the HTTP answer
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": error.status,
                    "headers": [(b"content-type", rq.JSON_TYPE.encode())],
                }
            )
            await send(
                {"type": "websocket.http.response.body", "body": rq.encode_json(error.to_dict())}
            )
