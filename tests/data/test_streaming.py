"""Streaming sources: buffered duration batching and the iterable dataset over real clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from asr_lightning.data.bucketing import padding_fraction
from asr_lightning.data.dataset import Example, Skipped
from asr_lightning.data.filters import FilterRules
from asr_lightning.data.sources import SourceConfig
from asr_lightning.data.streaming import StreamingASRDataset, buffered_batches
from asr_lightning.errors import ConfigError
from asr_lightning.model.features import collator
from asr_lightning.text.normalize import TextNormalizer
from asr_lightning.text.vocab import LabelEncoder, build_vocab, make_tokenizer

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "data" / "quickstart"


def _durations(n: int, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).uniform(0.5, 12.0, n))


def test_buffered_batches_cover_every_item_once_under_the_cap():
    durations = _durations(1000)
    batches = list(
        buffered_batches(
            ((i, d) for i, d in enumerate(durations)),
            buffer_size=200,
            max_batch_seconds=60.0,
            rng=np.random.default_rng(0),
        )
    )
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(1000))
    for batch in batches:
        assert len(batch) * max(durations[i] for i in batch) <= 60.0 or len(batch) == 1
    # a buffer of 200 sorted by duration pads far less than stream order would
    assert padding_fraction(batches, durations) < 0.1
    in_order = [list(range(i, min(i + 8, 1000))) for i in range(0, 1000, 8)]
    assert padding_fraction(in_order, durations) > 0.3


def test_buffered_batches_stay_within_their_buffer_and_shuffle_deterministically():
    durations = _durations(300, seed=1)
    items = [(i, d) for i, d in enumerate(durations)]
    a = list(buffered_batches(items, buffer_size=100, batch_size=10, rng=np.random.default_rng(5)))
    b = list(buffered_batches(items, buffer_size=100, batch_size=10, rng=np.random.default_rng(5)))
    assert a == b
    for batch in a:
        assert len({i // 100 for i in batch}) == 1  # never mixes two buffers
        assert len(batch) == 10
    unshuffled = list(buffered_batches(items, buffer_size=100, batch_size=10))
    firsts = [max(durations[i] for i in batch) for batch in unshuffled[:10]]
    assert firsts == sorted(firsts)  # evaluation order: sorted within the buffer


def test_buffered_batches_reject_bad_settings():
    with pytest.raises(ConfigError):
        list(buffered_batches([], max_batch_seconds=10.0, batch_size=4))
    with pytest.raises(ConfigError):
        list(buffered_batches([], buffer_size=0, batch_size=4))


@pytest.fixture(scope="module")
def text_side():
    rows = [json.loads(line) for line in (QUICKSTART / "train.jsonl").read_text().splitlines()][:40]
    vocab = build_vocab(TextNormalizer(case="keep")(r["text"]) for r in rows)
    tokenizer = make_tokenizer(vocab)
    return rows, TextNormalizer.from_vocab(vocab), LabelEncoder(tokenizer)


def _manifest(tmp_path: Path, rows: list[dict], extra: list[dict] = ()) -> Path:
    path = tmp_path / "stream.jsonl"
    with path.open("w") as f:
        for r in [*rows, *extra]:
            audio = r["audio_filepath"]
            if not Path(audio).is_absolute():
                audio = str(QUICKSTART / audio)
            f.write(json.dumps({"audio_filepath": audio, "text": r["text"], "id": r["id"]}) + "\n")
    return path


def _stream(path: Path, text_side, **kw) -> StreamingASRDataset:
    _, normalizer, encoder = text_side
    return StreamingASRDataset(
        SourceConfig(str(path), streaming=True),
        normalizer,
        encoder,
        FilterRules(min_duration_s=0.3),
        max_batch_seconds=20.0,
        buffer_size=16,
        **kw,
    )


def test_stream_over_two_workers_yields_each_item_once_and_counts_bad_ones(tmp_path, text_side):
    rows = text_side[0]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all" * 10)
    extra = [{"audio_filepath": str(broken), "text": "YES", "id": "broken"}]
    dataset = _stream(_manifest(tmp_path, rows, extra), text_side)
    from transformers import Wav2Vec2FeatureExtractor

    loader = DataLoader(
        dataset, batch_size=None, num_workers=2, collate_fn=collator(Wav2Vec2FeatureExtractor())
    )
    ids, skipped = [], []
    for batch in loader:
        ids += batch["ids"]
        skipped += batch["skipped"]
        assert batch["input_values"].shape[0] == len(batch["ids"])
        assert torch.all(batch["input_lengths"] > 0)
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert [s[0] for s in skipped] == ["broken"]
    assert skipped[0][1].startswith("decode failed")


def test_stream_shards_by_rank_and_reshuffles_by_epoch(tmp_path, text_side):
    path = _manifest(tmp_path, text_side[0])
    shares = []
    for rank in (0, 1):
        dataset = _stream(path, text_side, num_replicas=2, rank=rank)
        shares.append({item.id for batch in dataset for item in batch})
    assert not shares[0] & shares[1]
    assert len(shares[0] | shares[1]) == len(text_side[0])

    dataset = _stream(path, text_side)
    first = [[item.id for item in batch] for batch in dataset]
    dataset.set_epoch(1)
    second = [[item.id for item in batch] for batch in dataset]
    assert sorted(map(sorted, first)) == sorted(map(sorted, second))  # same buffers
    assert first != second  # other batch order
    # each item carries the seed of its draws this epoch: (data seed, epoch, source index)
    order = {row["id"]: index for index, row in enumerate(text_side[0])}
    dataset.set_epoch(3)
    seeds = {item.id: item.seed for batch in dataset for item in batch}
    assert seeds == {uid: (0, 3, order[uid]) for uid in seeds}


def test_a_parquet_stream_with_embedded_audio_trains(tmp_path, text_side):
    rows = text_side[0][:12]
    table = pa.table(
        {
            "audio": [
                {"bytes": (QUICKSTART / r["audio_filepath"]).read_bytes(), "path": r["id"]}
                for r in rows
            ],
            "sentence": [r["text"] for r in rows],
        }
    )
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    dataset = _stream(path, text_side, shuffle=False)
    items = [item for batch in dataset for item in batch]
    assert len(items) == 12
    assert all(isinstance(item, Example) for item in items), [
        item for item in items if isinstance(item, Skipped)
    ]
    assert all(item.audio.dtype == np.float32 and item.labels for item in items)


def test_the_datamodule_streams_a_source_marked_streaming(tmp_path, text_side):
    from asr_lightning.training.datamodule import ASRDataModule

    rows = text_side[0]
    path = _manifest(tmp_path, rows)
    dm = ASRDataModule(
        train=SourceConfig(str(path), streaming=True),
        validation=SourceConfig(str(path), streaming=True),
        model_type="wav2vec2",
        min_duration_s=0.3,
        max_batch_seconds=20.0,
        num_workers=0,
        duration_cache=None,
    )
    dm.setup("fit")
    assert isinstance(dm.datasets["train"]["train"], StreamingASRDataset)
    epochs = []
    for _ in range(2):
        epochs.append([i for batch in dm.train_dataloader() for i in batch["ids"]])
    assert sorted(epochs[0]) == sorted(r["id"] for r in rows)
    val = [i for batch in dm.val_dataloader()[0] for i in batch["ids"]]
    assert sorted(val) == sorted(r["id"] for r in rows)
