"""Prometheus metrics of the server, at ``GET /metrics``.

- ``asr_requests_total{path, status}``: answered HTTP requests;
- ``asr_request_duration_seconds{path}``: their latency, from the request's first byte to the
  last byte of the answer;
- ``asr_batch_size``: clips per model call of the dynamic batcher;
- ``asr_queue_depth``: clips waiting for the model;
- ``asr_requests_in_flight``: requests being answered;
- ``asr_audio_seconds_total``: seconds of audio transcribed (requests and streams);
- ``asr_streams_total{outcome}``: ``/stream`` sessions, by how they ended.

Each server gets its own registry (two servers in one process, as in tests, do not collide).
With ``--workers N`` every worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, set up by the supervisor) and any worker's
``/metrics`` answers for all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: prometheus-client's multiprocess folder variable.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Latency buckets in seconds: a short clip on a CPU takes tens of milliseconds, a long one
#: or a queue under load seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The paths requests are counted under; any other path counts as ``other``.
KNOWN_PATHS = ("/ping", "/invocations", "/metrics", "/", "/static")


def path_label(path: str) -> str:
    """The ``path`` label of a request path: ``/endpoints/x/invocations`` is ``/invocations``."""
    if path.endswith("/invocations"):
        return "/invocations"
    if path.startswith("/static/"):
        return "/static"
    return path if path in KNOWN_PATHS else "other"


class ServeMetrics:
    """The server's Prometheus metrics."""

    def __init__(self, max_batch_size: int = 8) -> None:
        """
        Args:
            max_batch_size: the batcher's largest batch (the batch-size histogram's last bucket).
        """
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "asr_requests", "HTTP requests answered", ["path", "status"], registry=registry
        )
        self.latency = Histogram(
            "asr_request_duration_seconds",
            "Request latency, first byte in to last byte out",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        sizes = sorted({1, 2, 4, 8, 16, 32, max_batch_size})
        self.batch_size = Histogram(
            "asr_batch_size",
            "Clips per model call",
            buckets=[s for s in sizes if s <= max_batch_size],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "asr_queue_depth",
            "Clips waiting for the model",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.in_flight = Gauge(
            "asr_requests_in_flight",
            "Requests being answered",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.audio_seconds = Counter(
            "asr_audio_seconds", "Seconds of audio transcribed", registry=registry
        )
        self.streams = Counter(
            "asr_streams", "Live transcription sessions", ["outcome"], registry=registry
        )

    def observe_batch(self, size: int, waiting: int) -> None:
        """One model call of ``size`` clips, with ``waiting`` clips left in the queue."""
        self.batch_size.observe(size)
        self.queue_depth.set(waiting)

    def exposition(self) -> bytes:
        """The text format of every metric (of every worker in multiprocess mode)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
