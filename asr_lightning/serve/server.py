"""``asr-lightning serve``: the ASGI app on uvicorn, one process or a pool of workers.

:class:`AsrServer` runs :func:`asr_lightning.serve.asgi.create_app` on a uvicorn server over a
socket it binds itself (port 0 picks a free port, known before the server starts). An event
loop holds every connection, so a slow or idle client costs a socket, not a thread; bodies that
do not arrive in time get 408, and ``max_concurrent`` caps requests answered at once (503).

Graceful shutdown: the first SIGTERM (or Ctrl-C) makes the app drain: ``/ping`` and new
requests get 503 while requests and streams in flight finish; the server exits when none is
left, or after ``shutdown_timeout_s`` at the latest. A second Ctrl-C exits at once.

``--workers N`` (:class:`WorkerPool`): N processes, each loading the model and serving the same
listening socket (the kernel spreads connections), stopped together on SIGTERM, with their
metrics shared through prometheus-client's multiprocess mode. A worker that dies while serving
is restarted; one that cannot load its model stops the pool (exit 1), and workers whose pool
was killed drain and exit instead of serving on as orphans.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn

from asr_lightning.artifacts import ONNX_FILE
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.errors import AsrLightningError, ConfigError
from asr_lightning.inference.chunking import ChunkOptions
from asr_lightning.inference.transcriber import DEFAULT_CHUNKING, BackendName, Transcriber
from asr_lightning.serve.app import ServeOptions, ServingApp
from asr_lightning.serve.asgi import create_app
from asr_lightning.serve.loading import load_transcriber
from asr_lightning.serve.metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

#: SageMaker's container port.
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
#: Seconds uvicorn gives connections still open once draining is over (then they are closed).
CLOSE_GRACE_S = 1.0
#: Seconds the pool waits for a worker past its own shutdown bound before killing it.
WORKER_KILL_GRACE_S = 10.0
#: Seconds between the pool's checks of its workers, and a worker's of its pool.
WORKER_POLL_S = 0.5
PARENT_POLL_S = 1.0
#: Exit status of a worker that could not load its model.
WORKER_FAILED_TO_START = 3
STARTUP_TIMEOUT_S = 60.0
LISTEN_BACKLOG = 2048
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (a clear error if the port is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err}; pick another --port") from err
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn's server with draining: the first signal drains, the loop exits when done."""

    def __init__(self, config: uvicorn.Config, serving: ServingApp) -> None:
        super().__init__(config)
        self.serving = serving
        self.drain_deadline: float | None = None

    def begin_drain(self) -> None:
        if self.drain_deadline is None:
            self.serving.draining = True
            self.drain_deadline = time.monotonic() + self.serving.options.shutdown_timeout_s
            log.info(
                "draining: %d in flight, exiting within %.0f s",
                self.serving.in_flight,
                self.serving.options.shutdown_timeout_s,
            )

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_deadline is None:
            self.begin_drain()
        elif sig == signal.SIGINT:  # a second Ctrl-C: now
            self.should_exit = self.force_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Our handlers while serving (main thread only), without uvicorn's re-raise after it:
        a drained server exits with status 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in SHUTDOWN_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self.drain_deadline is None:
            return False
        if self.serving.in_flight == 0:
            return True
        if time.monotonic() >= self.drain_deadline:
            log.warning("shutdown bound reached with %d in flight", self.serving.in_flight)
            return True
        return False


class AsrServer:
    """A running (or ready to run) uvicorn server around a :class:`ServingApp`."""

    def __init__(
        self,
        app: ServingApp,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        sock: socket.socket | None = None,
        access_log: bool = False,
    ) -> None:
        """
        Args:
            app: the logic to serve.
            host: interface to listen on (``0.0.0.0`` in a container).
            port: TCP port (0: any free port; see :attr:`port`).
            sock: an already listening socket (a worker of a :class:`WorkerPool`).
            access_log: log a line per request (uvicorn's access log).
        """
        self.app = app
        self.socket = sock if sock is not None else bind_socket(host, port)
        options = app.options
        config = uvicorn.Config(
            create_app(app),
            lifespan="off",
            log_config=None,
            access_log=access_log,
            timeout_keep_alive=options.keep_alive_s,
            timeout_graceful_shutdown=CLOSE_GRACE_S,
            ws_max_size=options.max_body_bytes,
        )
        self._uvicorn = _Uvicorn(config, app)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = self.socket.getsockname()[0]
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serves until drained (SIGTERM, Ctrl-C, :meth:`drain`) or :meth:`shutdown`."""
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self.app.close()

    def start(self) -> AsrServer:
        """Serves in a background thread (tests, benchmarks); returns once it listens."""
        self._thread = threading.Thread(target=self.serve_forever, name="asr-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def drain(self) -> None:
        """What SIGTERM does: 503 to new requests, exit once those in flight are answered."""
        self._uvicorn.begin_drain()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Waits for a :meth:`start`-ed server to exit; whether it did."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    def shutdown(self) -> None:
        """Stops now (requests in flight get :data:`CLOSE_GRACE_S`)."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()
        else:
            self.app.close()
        self.socket.close()


@dataclass(frozen=True)
class ModelSpec:
    """What each worker loads (picklable: workers are spawned processes)."""

    path: str
    backend: BackendName = "auto"
    onnx_file: str = ONNX_FILE
    num_threads: int | None = None
    batch_size: int = 8
    decoding: DecodingOptions | None = None
    chunking: ChunkOptions = DEFAULT_CHUNKING

    def load(self) -> Transcriber:
        if self.backend != "onnx" and self.num_threads is not None:
            import torch

            torch.set_num_threads(self.num_threads)
        return load_transcriber(
            self.path,
            backend=self.backend,
            onnx_file=self.onnx_file,
            num_threads=self.num_threads,
            batch_size=self.batch_size,
            decoding=self.decoding,
            chunking=self.chunking,
        )


def threads_per_worker(workers: int, cores: int | None = None) -> int | None:
    """Model threads of each of ``workers`` processes: the cores shared out (``None`` for one
    worker: the runtime's default, every core)."""
    if workers <= 1:
        return None
    return max(1, (cores or os.cpu_count() or 1) // workers)


def _worker_main(
    spec: ModelSpec, options: ServeOptions, sock: socket.socket, ready: Any, parent: int
) -> None:
    """One worker of a :class:`WorkerPool`: load the model, say so, serve the shared socket.

    A model that cannot be loaded ends the worker with :data:`WORKER_FAILED_TO_START` and its
    reason logged (the pool then stops: a restart would fail the same way). The worker drains
    and exits if the pool's process goes away (killed, not stopped), instead of serving on as
    an orphan.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app = ServingApp(spec.load(), options)
    except AsrLightningError as err:
        log.error("worker %d cannot load the model: %s", os.getpid(), err)
        raise SystemExit(WORKER_FAILED_TO_START) from None
    server = AsrServer(app, sock=sock)
    ready.set()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    server.serve_forever()


def _exit_with_parent(parent: int) -> None:
    """SIGTERM to this worker (a graceful drain) once the pool's process is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    log.warning("the worker pool's process %d is gone: draining", parent)
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class WorkerPool:
    """``workers`` processes serving one socket; SIGTERM drains them all."""

    spec: ModelSpec
    options: ServeOptions
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 2
    socket: socket.socket = field(init=False)
    _stopping: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        self.socket = bind_socket(self.host, self.port)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def run(self) -> int:
        """Serves until SIGTERM/Ctrl-C, then drains every worker; 0 if all exited cleanly."""
        metrics_dir = tempfile.mkdtemp(prefix="asr-lightning-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir  # inherited by every worker
        context = multiprocessing.get_context("spawn")  # no forked threads of torch/onnxruntime
        processes = [self._start(context) for _ in range(self.workers)]
        previous = {sig: signal.signal(sig, self._stop) for sig in SHUTDOWN_SIGNALS}
        failed = False
        try:
            while not self._stopping:
                time.sleep(WORKER_POLL_S)
                for index, (process, ready) in enumerate(processes):
                    if process.is_alive() or self._stopping:
                        continue
                    _mark_dead(process.pid)
                    if not ready.is_set():  # it never served: a restart would fail alike
                        log.error("worker %d failed to start (exit %s): stopping the pool",
                                  process.pid, process.exitcode)  # fmt: skip
                        self._stopping = failed = True
                        break
                    log.error("worker %d exited (%s): restarting it", process.pid,
                              process.exitcode)  # fmt: skip
                    processes[index] = self._start(context)
            for process, _ in processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.options.shutdown_timeout_s + WORKER_KILL_GRACE_S
            for process, _ in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    log.error("worker %d did not stop in time: killing it", process.pid)
                    process.kill()
                    process.join()
            clean = all(p.exitcode == 0 for p, _ in processes)
            return 0 if clean and not failed else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.socket.close()
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _start(self, context: multiprocessing.context.SpawnContext) -> tuple[Any, Any]:
        """A started worker and the event it sets once its model is loaded."""
        ready = context.Event()
        process = context.Process(
            target=_worker_main,
            args=(self.spec, self.options, self.socket, ready, os.getpid()),
            daemon=False,
        )
        process.start()
        return process, ready

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self._stopping = True


def _mark_dead(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the shared metrics."""
    if pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
