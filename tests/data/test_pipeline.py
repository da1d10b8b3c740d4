"""Set-up in chunks and in a pool of forked processes: the same rows, report and sample as one
process gives, in the same order, with every unreadable or dropped row counted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from asr_lightning.data import pipeline
from asr_lightning.data.filters import FilterRules
from asr_lightning.data.pipeline import (
    ChunkJob,
    join,
    manifest_spans_to_split,
    prepare_rows,
    prepare_spans,
    prepare_table,
    read_spans,
    utterances,
)
from asr_lightning.data.records import SourceConfig
from asr_lightning.data.sources import iter_manifest
from asr_lightning.data.table import ItemTable
from asr_lightning.errors import DataSourceError
from asr_lightning.text.normalize import TextNormalizer

QUICKSTART = Path(__file__).resolve().parents[2] / "data" / "quickstart"


def corpus(path: Path, rows: int = 3000) -> Path:
    """Quickstart rows repeated under unique ids, some without a duration (measured from the
    file), some too short, some with a missing file, some with non-ASCII transcripts."""
    source = [json.loads(line) for line in (QUICKSTART / "train.jsonl").read_text().splitlines()]
    lines = []
    for index in range(rows):
        row = dict(source[index % len(source)])
        row["id"] = f"u{index}"
        row["audio_filepath"] = str(QUICKSTART / row["audio_filepath"])
        if index % 7 == 0:
            del row["duration"]
        if index % 11 == 0:
            row["duration"] = 0.2
        if index % 13 == 0:
            row["audio_filepath"] = str(path.parent / f"missing-{index}.wav")
            row.pop("duration", None)
        if index % 17 == 0:
            row["text"] = "ÉTÉ " + row["text"] + " naïve"
        lines.append(json.dumps(row, ensure_ascii=False))
        if index % 100 == 0:
            lines.append("")  # blank lines are skipped, and still counted as lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks and spans small enough that a few thousand rows make many of them."""
    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 256)
    monkeypatch.setattr(pipeline, "MIN_PARALLEL_ROWS", 512)
    monkeypatch.setattr(pipeline, "SPAN_BYTES", 16 << 10)
    pools = []
    original = pipeline.run_pool

    def counted(task, items, workers, job):
        pools.append((task.__name__, len(items), workers))
        return original(task, items, workers, job)

    monkeypatch.setattr(pipeline, "run_pool", counted)
    return pools


def job(tmp_path: Path, keep_unreadable: bool) -> ChunkJob:
    normalizer = TextNormalizer.from_vocab(
        {c: i for i, c in enumerate("|ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}
    )
    return ChunkJob(
        FilterRules(min_duration_s=0.5, max_duration_s=18.0, output_frames_per_second=12.5),
        normalizer,
        None,
        str(tmp_path / "durations.sqlite"),
        keep_unreadable=keep_unreadable,
    )


def same(a, b) -> None:
    assert list(a.table) == list(b.table)
    assert list(a.unreadable) == list(b.unreadable)
    assert a.report.to_dict() == b.report.to_dict()
    assert a.sample == b.sample


@pytest.mark.parametrize("keep_unreadable", [False, True])
def test_a_pool_over_spans_sets_up_what_one_process_does(tmp_path, small_chunks, keep_unreadable):
    manifest = corpus(tmp_path / "train.jsonl")
    config = SourceConfig(str(manifest))
    alone = join(
        prepare_rows(job(tmp_path / "one", keep_unreadable), iter_manifest(manifest, config))
    )
    spans = manifest_spans_to_split(config, workers=2)
    assert spans is not None and len(spans) > 4
    pooled = join(prepare_spans(job(tmp_path / "two", keep_unreadable), config, spans, workers=2))
    assert small_chunks == [("_prepare_span", len(spans), 2)]
    same(pooled, alone)
    report = pooled.report
    assert report.total == 3000 and report.kept == len(pooled.table)
    assert report.dropped["too short"] > 200
    assert sum(v for k, v in report.dropped.items() if k.startswith("decode failed")) == 231
    assert len(pooled.unreadable) == (231 if keep_unreadable else 0)
    assert len(pooled.sample) == pipeline.SAMPLE_ROWS and pooled.sample[0].id == "u0"
    speakers = {u.id: u.speaker for u in iter_manifest(manifest, config)}
    for item in [*pooled.table, *pooled.unreadable]:  # each row keeps its speaker
        assert item.speaker == speakers[item.id] and item.speaker


def test_a_pool_over_rows_read_before_sets_up_what_one_process_does(tmp_path, small_chunks):
    manifest = corpus(tmp_path / "train.jsonl")
    config = SourceConfig(str(manifest))
    spans = manifest_spans_to_split(config, workers=2)
    normalizer = TextNormalizer(case="upper")
    raw = read_spans(normalizer, config, spans, workers=2)
    rows = list(iter_manifest(manifest, config))
    assert [u.id for u in utterances(raw.table)] == [u.id for u in rows]
    assert [u.duration for u in utterances(raw.table)] == [u.duration for u in rows]
    assert [u.speaker for u in utterances(raw.table)] == [u.speaker for u in rows]
    assert raw.characters == normalizer.characters(u.text for u in rows)
    assert {"É", "Ï"} <= raw.characters
    alone = join(prepare_table(job(tmp_path / "one", False), raw.table, workers=1))
    pooled = join(prepare_table(job(tmp_path / "two", False), raw.table, workers=2))
    same(pooled, alone)
    assert small_chunks[-1] == ("_prepare_range", math.ceil(3000 / 256), 2)


def test_small_sources_and_one_worker_stay_in_this_process(tmp_path, small_chunks):
    manifest = corpus(tmp_path / "train.jsonl", rows=100)
    config = SourceConfig(str(manifest))
    assert manifest_spans_to_split(config, workers=2) is None  # under two spans' bytes
    assert manifest_spans_to_split(SourceConfig(str(corpus(tmp_path / "big.jsonl"))), 1) is None
    table = ItemTable.concat([])
    assert len(join(prepare_table(job(tmp_path, False), table, workers=2)).table) == 0
    assert small_chunks == []


def test_an_error_in_a_forked_span_names_the_file_and_its_line(tmp_path, small_chunks):
    manifest = corpus(tmp_path / "train.jsonl")
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines[2500] = '{"audio_filepath": "x.wav", "text": 3}'
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = SourceConfig(str(manifest))
    spans = manifest_spans_to_split(config, workers=2)
    with pytest.raises(DataSourceError, match=r"train.jsonl:2501: field 'text' must be a string"):
        prepare_spans(job(tmp_path, False), config, spans, workers=2)
