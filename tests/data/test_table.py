"""The columnar item table: the same items back, in flat arrays that forked workers share."""

from __future__ import annotations

import os
import pickle
import tracemalloc

import numpy as np
import pytest

from asr_lightning.data.records import Item
from asr_lightning.data.table import (
    CodedColumn,
    ItemTable,
    ItemTableBuilder,
    StringColumn,
    as_table,
)

ITEMS = [
    Item("a1", "/data/a 1.wav", "HELLO WORLD", 1.25, speaker="spk-é"),
    Item("ß-2", b"RIFF\x00\x01binary", "ÉTÉ À PARIS", 3.5),  # embedded audio bytes, non-ASCII
    Item("", "/data/c.flac", "", 0.0, "decode failed: NaN or infinite samples", speaker="b"),
    Item("d4", "/data/d.opus", "\U0001f600 EMOJI", 17.999, speaker="spk-é"),
]


def test_rows_come_back_as_the_items_they_were():
    table = ItemTable.from_items(ITEMS)
    assert len(table) == 4 and list(table) == ITEMS
    assert table[-1] == ITEMS[-1] and table[1:3] == ITEMS[1:3]
    assert isinstance(table[1].audio, bytes) and isinstance(table[0].audio, str)
    np.testing.assert_array_equal(table.durations, [1.25, 3.5, 0.0, 17.999])
    assert table.unreadable == {2: ITEMS[2].unreadable}
    with pytest.raises(IndexError):
        table[4]


def test_columns_are_flat_arrays_not_python_objects():
    tracemalloc.start()
    items = [
        Item(f"utt{i:05d}", f"/corpus/clips/utt{i:05d}.mp3", f"SOME WORDS {i}", 2.0 + i)
        for i in range(10_000)
    ]
    as_objects = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    table = ItemTable.from_items(items)
    for column in (table.ids, table.audio, table.texts):
        assert isinstance(column._data, np.ndarray) and isinstance(column._offsets, np.ndarray)
    assert table.nbytes < as_objects / 4  # 80 bytes a row here, against 400 as objects
    assert list(table) == items


def test_speakers_are_a_code_a_row_and_each_name_once_through_rows_and_concat():
    table = ItemTable.from_items(ITEMS)
    assert table.speakers.codes.tolist() == [0, -1, 1, 0] and list(table.speakers.names) == [
        "spk-é",
        "b",
    ]
    tail = table.rows(2, 4)  # only the names its rows use
    assert list(tail) == ITEMS[2:] and sorted(tail.speakers.names) == ["b", "spk-é"]
    joined = ItemTable.concat([tail, table.rows(0, 2), ItemTable.from_items([])])
    assert list(joined) == ITEMS[2:] + ITEMS[:2]
    assert sorted(joined.speakers.names) == ["b", "spk-é"]
    assert list(CodedColumn.concat([])) == [] and len(table.rows(1, 2).speakers.names) == 0
    # a Common Voice client_id is 128 characters; 10,000 rows of 20 speakers cost 4 bytes a row
    many = ItemTable.from_items(
        Item(f"u{i}", f"/c/{i}.mp3", "A", 1.0, speaker=f"{i % 20:0128x}") for i in range(10_000)
    )
    assert many.speakers.nbytes < 10_000 * 4 + 20 * 140


def test_a_table_pickles_for_spawned_workers_and_stays_a_table():
    table = as_table(ITEMS)
    assert as_table(table) is table
    assert list(pickle.loads(pickle.dumps(table))) == ITEMS


def test_an_empty_table_and_column():
    assert len(ItemTable.from_items([])) == 0 and list(StringColumn.build([])) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="copy-on-read is about fork")
def test_a_forked_reader_touches_no_row_objects():
    """Reading every row in a forked child copies (almost) nothing of the parent's table."""
    psutil = pytest.importorskip("psutil")
    builder = ItemTableBuilder()
    for i in range(200_000):
        builder.append(Item(f"utt{i:07d}", f"/corpus/clips/common_voice_{i:09d}.mp3", "A B", 4.0))
    table = builder.finish()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read every row, report its private memory growth
        me = psutil.Process()
        before = me.memory_full_info().uss
        rows = sum(len(table[i].id) for i in range(len(table)))  # as DataLoader workers read
        grown = me.memory_full_info().uss - before
        os.write(write, f"{rows} {grown}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    rows, grown = map(int, os.read(read, 64).split())
    assert rows == 200_000 * 10
    assert grown < 4 * 2**20  # the table is ~17 MB; a list of Item objects would be copied


def test_iterating_a_column_crosses_blocks_and_keeps_bytes_rows(monkeypatch):
    monkeypatch.setattr("asr_lightning.data.table.ITER_BLOCK_ROWS", 3)
    values = ["a", b"\x00\xff", "", "ÉTÉ", b"", "z" * 50, "\U0001f600"]
    column = StringColumn.build(values)
    assert list(column) == values == [column[i] for i in range(len(values))]
