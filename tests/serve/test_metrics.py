"""Prometheus metrics: what /metrics shows after real requests to a live server."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from asr_lightning.serve.metrics import ServeMetrics, path_label


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a server's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_paths_are_labelled_without_unbounded_values():
    assert path_label("/endpoints/my-asr/invocations") == "/invocations"
    assert path_label("/ping") == "/ping"
    assert path_label("/static/app.js") == "/static"
    assert path_label("/wp-admin/../etc") == "other"


def test_two_servers_in_one_process_keep_their_own_counts():
    first, second = ServeMetrics(), ServeMetrics()
    first.audio_seconds.inc(2.5)
    assert first.registry is not second.registry
    assert b"asr_audio_seconds_total 2.5" in first.exposition()
    assert b"asr_audio_seconds_total 0.0" in second.exposition()


def test_batch_sizes_stop_at_the_largest_batch():
    text = ServeMetrics(max_batch_size=4).exposition().decode()
    assert 'asr_batch_size_bucket{le="4.0"}' in text and 'le="8.0"' not in text
