"""The utterance table of a dataset, stored in columns: flat numpy arrays, not Python objects.

A list of a million :class:`~asr_lightning.data.dataset.Item` objects costs about 0.5 GB, and a
forked DataLoader worker that reads them touches each object's reference count, so the kernel
copies every page it reads into the worker (copy-on-read): each worker's private memory grows
towards the size of the table over an epoch. Here every column is one buffer (strings as UTF-8
bytes plus an offsets array, durations as float64), so reading a row touches no per-row object,
workers share the pages with the main process, and the table of Common Voice English (about a
million clips) takes about 100 MB. Speakers are few and long (a Common Voice ``client_id`` is
128 characters), so that column holds a code per row and each speaker's name once
(:class:`CodedColumn`). Rows are built into :class:`Item` objects on access.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import overload

import numpy as np

from asr_lightning.data.records import Item

#: Rows a column converts at a time when it is iterated.
ITER_BLOCK_ROWS = 16_384


class StringColumn(Sequence[str | bytes]):
    """Strings (or bytes) in one buffer; row ``i`` is ``data[offsets[i]:offsets[i + 1]]``.

    Args:
        data: The concatenated UTF-8 encodings (``uint8``).
        offsets: ``len + 1`` start offsets (``int64``), the last one the buffer's length.
        is_bytes: Rows that hold ``bytes`` rather than text (embedded audio), or ``None``.
    """

    __slots__ = ("_data", "_offsets", "_is_bytes")

    def __init__(self, data: np.ndarray, offsets: np.ndarray, is_bytes: np.ndarray | None) -> None:
        self._data = data
        self._offsets = offsets
        self._is_bytes = is_bytes

    @classmethod
    def build(cls, values: Iterable[str | bytes]) -> StringColumn:
        builder = _ColumnBuilder()
        for value in values:
            builder.append(value)
        return builder.finish()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str | bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[str | bytes]: ...
    def __getitem__(self, index: int | slice) -> str | bytes | list[str | bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of a column of {len(self)}")
        raw = self._data[self._offsets[index] : self._offsets[index + 1]].tobytes()
        if self._is_bytes is not None and self._is_bytes[index]:
            return raw
        return raw.decode("utf-8")

    def __iter__(self) -> Iterator[str | bytes]:
        """Every row, in order, converted a block of rows at a time (several times the speed
        of indexing row by row, with one block's copy in memory)."""
        is_bytes = self._is_bytes
        for first in range(0, len(self), ITER_BLOCK_ROWS):
            offsets = self._offsets[first : first + ITER_BLOCK_ROWS + 1].tolist()
            raw = self._data[offsets[0] : offsets[-1]].tobytes()
            base = offsets[0]
            for row in range(len(offsets) - 1):
                value = raw[offsets[row] - base : offsets[row + 1] - base]
                if is_bytes is not None and is_bytes[first + row]:
                    yield value
                else:
                    yield value.decode("utf-8")

    @property
    def nbytes(self) -> int:
        extra = 0 if self._is_bytes is None else self._is_bytes.nbytes
        return self._data.nbytes + self._offsets.nbytes + extra

    def rows(self, start: int, stop: int) -> StringColumn:
        """Rows ``start:stop`` as a column of their own (copied, so it pickles alone)."""
        offsets = self._offsets[start : stop + 1]
        data = self._data[offsets[0] : offsets[-1]].copy()
        is_bytes = None if self._is_bytes is None else self._is_bytes[start:stop].copy()
        return StringColumn(data, offsets - offsets[0], is_bytes)

    @classmethod
    def concat(cls, columns: Sequence[StringColumn]) -> StringColumn:
        """The rows of ``columns``, one after the other."""
        if not columns:
            return _ColumnBuilder().finish()
        data = np.concatenate([c._data for c in columns])
        shifts = np.cumsum([0] + [len(c._data) for c in columns[:-1]])
        offsets = np.concatenate(
            [columns[0]._offsets[:1]]
            + [c._offsets[1:] + shift for c, shift in zip(columns, shifts, strict=True)]
        )
        is_bytes = None
        if any(c._is_bytes is not None for c in columns):
            is_bytes = np.concatenate(
                [np.zeros(len(c), bool) if c._is_bytes is None else c._is_bytes for c in columns]
            )
        return StringColumn(data, offsets, is_bytes)


class CodedColumn(Sequence[str | None]):
    """Optional strings that repeat (speakers): an ``int32`` code per row, each name once.

    Args:
        codes: One code per row, ``-1`` for a row without a value.
        names: The distinct values; code ``c`` is ``names[c]``.
    """

    __slots__ = ("codes", "names")

    def __init__(self, codes: np.ndarray, names: StringColumn) -> None:
        self.codes = codes
        self.names = names

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, index: int) -> str | None: ...
    @overload
    def __getitem__(self, index: slice) -> list[str | None]: ...
    def __getitem__(self, index: int | slice) -> str | None | list[str | None]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        code = int(self.codes[index])
        return None if code < 0 else str(self.names[code])

    def __iter__(self) -> Iterator[str | None]:
        names = list(self.names)  # the distinct values only
        for code in self.codes.tolist():
            yield None if code < 0 else names[code]

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.names.nbytes

    def rows(self, start: int, stop: int) -> CodedColumn:
        """Rows ``start:stop`` as a column of their own, with only the names they use."""
        codes = self.codes[start:stop]
        used = np.unique(codes[codes >= 0])
        # one slot more than there are names, left at -1: code -1 maps to itself
        remap = np.full(len(self.names) + 1, -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        names = StringColumn.build(self.names[int(code)] for code in used)
        return CodedColumn(remap[codes], names)

    @classmethod
    def concat(cls, columns: Sequence[CodedColumn]) -> CodedColumn:
        """The rows of ``columns``, one after the other, each name once."""
        index: dict[str | bytes, int] = {}
        parts = []
        for column in columns:
            remap = np.array(
                [index.setdefault(name, len(index)) for name in column.names] + [-1], np.int32
            )
            parts.append(remap[column.codes])  # code -1 takes the last slot: -1 again
        codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return CodedColumn(codes, StringColumn.build(index))


class _CodedBuilder:
    """Appends optional strings to a :class:`CodedColumn`, a code per row."""

    def __init__(self) -> None:
        self._codes = array("i")
        self._index: dict[str, int] = {}

    def append(self, value: str | None) -> None:
        self._codes.append(-1 if value is None else self._index.setdefault(value, len(self._index)))

    def finish(self) -> CodedColumn:
        codes = np.frombuffer(self._codes, dtype=np.int32).copy()
        column = CodedColumn(codes, StringColumn.build(self._index))
        self.__init__()  # empty again
        return column


class _ColumnBuilder:
    """Appends strings to a growing buffer; :meth:`finish` freezes it into numpy arrays.

    Rows wait in a short list and are moved into the buffer a block at a time (one ``join``
    and one offsets update per block, rather than growing the buffer row by row).
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self._offsets = array("q", [0])
        self._bytes_rows = array("q")
        self._pending: list[str | bytes] = []
        self._rows = 0

    def append(self, value: str | bytes) -> None:
        if value.__class__ is not str:
            if not isinstance(value, bytes):
                raise TypeError(f"a column holds str or bytes, got {type(value).__name__}")
            self._bytes_rows.append(self._rows)
        self._pending.append(value)
        self._rows += 1
        if len(self._pending) == ITER_BLOCK_ROWS:
            self._flush()

    def _flush(self) -> None:
        encoded = [
            value if value.__class__ is bytes else value.encode("utf-8", "surrogatepass")
            for value in self._pending
        ]
        ends = accumulate(map(len, encoded), initial=self._offsets[-1])
        next(ends)  # the initial value, already the last offset
        self._offsets.extend(ends)
        self._data += b"".join(encoded)
        self._pending = []

    def finish(self) -> StringColumn:
        self._flush()
        rows = self._rows
        is_bytes = None
        if self._bytes_rows:
            is_bytes = np.zeros(rows, dtype=bool)
            is_bytes[np.frombuffer(self._bytes_rows, dtype=np.int64)] = True
        data = np.frombuffer(bytes(self._data), dtype=np.uint8)
        offsets = np.frombuffer(self._offsets, dtype=np.int64).copy()
        self.__init__()  # empty again
        return StringColumn(data, offsets, is_bytes)


class ItemTable(Sequence[Item]):
    """The items of a dataset in columns; ``table[i]`` is the :class:`Item` of row ``i``.

    Build it with :class:`ItemTableBuilder` (or :meth:`from_items`); it is read-only.
    """

    __slots__ = ("ids", "audio", "texts", "durations", "unreadable", "speakers")

    def __init__(
        self,
        ids: StringColumn,
        audio: StringColumn,
        texts: StringColumn,
        durations: np.ndarray,
        unreadable: dict[int, str],
        speakers: CodedColumn,
    ) -> None:
        if not len(ids) == len(audio) == len(texts) == len(durations) == len(speakers):
            raise ValueError("the columns of an item table must have one row per item")
        self.ids = ids
        self.audio = audio
        self.texts = texts
        self.durations = durations
        self.unreadable = unreadable  # row -> reason: the few rows setup could not read
        self.speakers = speakers

    @classmethod
    def from_items(cls, items: Iterable[Item]) -> ItemTable:
        builder = ItemTableBuilder()
        builder.extend(items)
        return builder.finish()

    def __len__(self) -> int:
        return len(self.durations)

    @overload
    def __getitem__(self, index: int) -> Item: ...
    @overload
    def __getitem__(self, index: slice) -> list[Item]: ...
    def __getitem__(self, index: int | slice) -> Item | list[Item]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        return Item(
            str(self.ids[index]),
            self.audio[index],
            str(self.texts[index]),
            float(self.durations[index]),
            self.unreadable.get(index),
            self.speakers[index],
        )

    def __iter__(self) -> Iterator[Item]:
        unreadable = self.unreadable
        columns = (self.ids, self.audio, self.texts, self.durations.tolist(), self.speakers)
        for index, (uid, audio, text, duration, speaker) in enumerate(zip(*columns, strict=True)):
            yield Item(str(uid), audio, str(text), duration, unreadable.get(index), speaker)

    def rows(self, start: int, stop: int) -> ItemTable:
        """Rows ``start:stop`` as a table of their own (copied: it pickles without the rest)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        stop = max(start, stop)
        unreadable = {i - start: why for i, why in self.unreadable.items() if start <= i < stop}
        return ItemTable(
            self.ids.rows(start, stop),
            self.audio.rows(start, stop),
            self.texts.rows(start, stop),
            self.durations[start:stop].copy(),
            unreadable,
            self.speakers.rows(start, stop),
        )

    @classmethod
    def concat(cls, tables: Sequence[ItemTable]) -> ItemTable:
        """The rows of ``tables``, one after the other."""
        unreadable: dict[int, str] = {}
        first = 0
        for table in tables:
            unreadable.update((first + i, why) for i, why in table.unreadable.items())
            first += len(table)
        return ItemTable(
            StringColumn.concat([t.ids for t in tables]),
            StringColumn.concat([t.audio for t in tables]),
            StringColumn.concat([t.texts for t in tables]),
            np.concatenate([t.durations for t in tables]) if tables else np.zeros(0),
            unreadable,
            CodedColumn.concat([t.speakers for t in tables]),
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        columns = (self.ids, self.audio, self.texts, self.speakers)
        return sum(c.nbytes for c in columns) + self.durations.nbytes


class ItemTableBuilder:
    """Collects items row by row without keeping an object per row."""

    def __init__(self) -> None:
        self._ids = _ColumnBuilder()
        self._audio = _ColumnBuilder()
        self._texts = _ColumnBuilder()
        self._durations = array("d")
        self._unreadable: dict[int, str] = {}
        self._speakers = _CodedBuilder()

    def __len__(self) -> int:
        return len(self._durations)

    def append(self, item: Item) -> None:
        self.append_row(
            item.id, item.audio, item.text, item.duration, item.unreadable, item.speaker
        )

    def append_row(
        self,
        uid: str,
        audio: str | bytes,
        text: str,
        duration: float,
        unreadable: str | None = None,
        speaker: str | None = None,
    ) -> None:
        """:meth:`append` without an :class:`Item` (set-up appends a million rows)."""
        if unreadable is not None:
            self._unreadable[len(self._durations)] = unreadable
        self._ids.append(uid)
        self._audio.append(audio)
        self._texts.append(text)
        self._durations.append(duration)
        self._speakers.append(speaker)

    def extend(self, items: Iterable[Item]) -> None:
        for item in items:
            self.append(item)

    def finish(self) -> ItemTable:
        durations = np.frombuffer(self._durations, dtype=np.float64).copy()
        table = ItemTable(
            self._ids.finish(),
            self._audio.finish(),
            self._texts.finish(),
            durations,
            dict(self._unreadable),
            self._speakers.finish(),
        )
        self._durations, self._unreadable = array("d"), {}
        return table


def as_table(items: Sequence[Item]) -> ItemTable:
    """``items`` as an :class:`ItemTable` (itself when it already is one)."""
    return items if isinstance(items, ItemTable) else ItemTable.from_items(items)
