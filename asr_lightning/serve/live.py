"""The ``/stream`` WebSocket endpoint and the demo page's routes (Starlette).

The protocol and its logic are :mod:`asr_lightning.serve.streaming`'s; this module only moves
frames: it receives within the server's ``read_timeout_s``, starts partials through the shared
batcher (:meth:`~asr_lightning.serve.app.ServingApp.submit`), sends the final and closes.
A client that goes away mid-stream is counted as ``disconnected``: its partial is cancelled
(the batcher skips a cancelled clip) and nothing is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from asr_lightning.inference.transcriber import Transcript
from asr_lightning.serve import requests as rq
from asr_lightning.serve import streaming as st
from asr_lightning.serve.app import ServingApp

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"


class _Disconnected(Exception):
    """The client closed the connection."""


def live_routes(serving: ServingApp, options: st.StreamOptions) -> list[BaseRoute]:
    """``/stream``, the demo page at ``/`` and its files under ``/static``."""

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        outcome = await _Stream(websocket, serving, options).run()
        serving.metrics.streams.labels(outcome).inc()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return [
        WebSocketRoute("/stream", stream),
        Route("/", index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


class _Stream:
    """One ``/stream`` connection, from accept to close."""

    def __init__(self, websocket: WebSocket, serving: ServingApp, options: st.StreamOptions):
        self.websocket = websocket
        self.serving = serving
        self.options = options
        self.partials: set[asyncio.Task] = set()
        self.send_lock = asyncio.Lock()

    async def run(self) -> str:
        """Serves the stream; how it ended (an ``asr_streams_total`` outcome)."""
        try:
            if self.serving.draining:
                raise st.draining_error()
            rate = st.parse_sample_rate(self.websocket.query_params.get("sample_rate"))
            session = st.StreamSession(rate, self.serving.transcriber.sample_rate, self.options)
            await self._receive_audio(session)
            await self._cancel_partials()
            session.cancel_partial()
            transcript = await self._decode(session.final_audio())
            frame = st.final_frame(transcript)
            self.serving.metrics.audio_seconds.inc(transcript.duration_s)
            await self._send(frame)
            await self._close(st.CLOSE_NORMAL)
            return st.OUTCOME_COMPLETED
        except st.StreamError as err:
            with contextlib.suppress(_Disconnected):
                await self._send(err.to_dict())
                await self._close(err.code)
            return err.outcome
        except _Disconnected:
            return st.OUTCOME_DISCONNECTED
        finally:
            await self._cancel_partials()

    async def _receive_audio(self, session: st.StreamSession) -> None:
        """Reads frames until ``{"event": "end"}``, starting partials on the way."""
        timeout_s = self.serving.options.read_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout_s)
            except asyncio.TimeoutError:
                raise st.idle_error(timeout_s) from None
            if message["type"] == "websocket.disconnect":
                raise _Disconnected()
            if message.get("bytes") is not None:
                session.feed(message["bytes"])
                if session.partial_due():
                    task = asyncio.create_task(self._partial(session, session.start_partial()))
                    self.partials.add(task)
                    task.add_done_callback(self.partials.discard)
            elif message.get("text") is not None:
                st.parse_event(message["text"])
                return

    async def _partial(self, session: st.StreamSession, request: st.PartialRequest) -> None:
        try:
            transcript = await asyncio.wrap_future(self.serving.submit(request.audio))
        except Exception as err:  # a failed preview is not fatal: the final decides
            log.warning("partial failed: %s: %s", type(err).__name__, err)
            session.cancel_partial()
            return
        if transcript.error:
            session.cancel_partial()
            return
        text = session.finish_partial(request, transcript.text, transcript.words)
        with contextlib.suppress(_Disconnected):
            await self._send({"partial": text, "duration_s": request.duration_s})

    async def _cancel_partials(self) -> None:
        """Drops partials still in flight: the final follows at once, and no partial after it
        (the batcher skips a cancelled clip it has not started)."""
        tasks = list(self.partials)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _decode(self, audio: Any) -> Transcript:
        future = asyncio.wrap_future(self.serving.submit(audio))
        try:
            return await asyncio.wait_for(future, self.serving.options.request_timeout_s)
        except asyncio.TimeoutError:
            raise st.StreamError(
                rq.UNAVAILABLE,
                "the model is overloaded: retry later",
                st.CLOSE_TRY_AGAIN_LATER,
                st.OUTCOME_FAILED,
            ) from None
        except Exception as err:
            log.error("inference failed: %s: %s", type(err).__name__, err)
            raise st.failed_error(f"inference failed: {type(err).__name__}: {err}") from err

    async def _send(self, document: dict[str, Any]) -> None:
        async with self.send_lock:
            if self.websocket.application_state != WebSocketState.CONNECTED:
                raise _Disconnected()
            try:
                await self.websocket.send_text(rq.encode_json(document).decode("utf-8"))
            except (WebSocketDisconnect, RuntimeError) as err:
                raise _Disconnected() from err

    async def _close(self, code: int) -> None:
        async with self.send_lock:
            if self.websocket.application_state != WebSocketState.CONNECTED:
                raise _Disconnected()
            try:
                await self.websocket.close(code)
            except (WebSocketDisconnect, RuntimeError) as err:
                raise _Disconnected() from err
