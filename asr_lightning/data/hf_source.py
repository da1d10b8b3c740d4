"""Hugging Face ``datasets`` as a source: Hub ids, ``save_to_disk`` folders and Parquet files.

Audio columns are read with ``Audio(decode=False)``: ``datasets`` would otherwise decode with
torchcodec, which asr-lightning does not use. Each row's ``{"path", "bytes"}`` becomes
:attr:`Utterance.audio` (the bytes when the dataset embeds them, else the path), and decoding
happens later in :mod:`asr_lightning.audio.decode`.

Non-streaming datasets with embedded audio (most Hub datasets) put every file's bytes in memory
as utterances are listed: stream large corpora (``streaming: true``) or save them locally.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets

from asr_lightning.data.records import (
    AUDIO_COLUMN_CANDIDATES,
    DEFAULT_AUDIO_COLUMN,
    DEFAULT_TEXT_COLUMN,
    SPEAKER_COLUMN_CANDIDATES,
    TEXT_COLUMN_CANDIDATES,
    SourceConfig,
    SourceKind,
    Utterance,
    duration_value,
    optional_column,
    pick_column,
)
from asr_lightning.errors import DataSourceError

log = logging.getLogger(__name__)

DEFAULT_SPLIT = "train"
#: Rows fetched from Arrow per step when listing a non-streaming dataset.
ROWS_PER_BATCH = 1000
CV_HUB_NOTE = (
    "Common Voice 17 is no longer served from the HF Hub: download the release from "
    "https://commonvoice.mozilla.org/datasets and point to the local folder (cv-corpus-*/<lang>)."
)

AnyDataset = datasets.Dataset | datasets.IterableDataset


def iter_hf(config: SourceConfig, kind: SourceKind) -> Iterator[Utterance]:
    """Utterances of a Hub dataset, a ``save_to_disk`` folder or a Parquet file."""
    if kind == "hf_disk":
        dataset = _open_saved(Path(config.path), config.split)
    elif kind == "parquet":
        dataset = _open_parquet(config)
    else:
        dataset = open_hub_dataset(config)
    yield from dataset_utterances(dataset, config, origin=config.path)


def _open_saved(folder: Path, split: str | None) -> AnyDataset:
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise DataSourceError(f"cannot load the saved dataset in {folder}: {err}") from err
    return _pick_split(loaded, split, str(folder))


def _open_parquet(config: SourceConfig) -> AnyDataset:
    try:
        return datasets.load_dataset(
            "parquet", data_files=config.path, split="train", streaming=config.streaming
        )
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise DataSourceError(f"cannot read Parquet file {config.path}: {err}") from err


def _pick_split(loaded: Any, split: str | None, where: str) -> AnyDataset:
    if not isinstance(loaded, Mapping):  # a single Dataset
        if split is not None:
            log.info("%s holds a single split; ignoring split %r", where, split)
        return loaded
    split = split or DEFAULT_SPLIT
    if split not in loaded:
        raise DataSourceError(
            f"{where} has no split {split!r}; available splits: {', '.join(loaded)}"
        )
    return loaded[split]


def open_hub_dataset(config: SourceConfig) -> AnyDataset:
    """``datasets.load_dataset`` with its failures turned into explanations.

    Raises:
        DataSourceError: offline or unreachable Hub, unknown or gated dataset, unknown split or
            configuration.
    """
    dataset_id = config.path
    note = f" {CV_HUB_NOTE}" if "common_voice" in dataset_id.lower() else ""
    try:
        return datasets.load_dataset(
            dataset_id,
            config.name,
            split=config.split or DEFAULT_SPLIT,
            streaming=config.streaming,
            revision=config.revision,
        )
    except ConnectionError as err:  # includes huggingface_hub's OfflineModeIsEnabled
        raise DataSourceError(
            f"could not reach the Hugging Face Hub for dataset {dataset_id!r}: no network, or "
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). Load it once while online "
            f"(it is then cached), or save it with save_to_disk and give that folder.{note} "
            f"({err})"
        ) from err
    except datasets.exceptions.DatasetNotFoundError as err:
        raise DataSourceError(
            f"dataset {dataset_id!r} was not found on the Hugging Face Hub, or it is gated: "
            "check the id, accept its conditions on the dataset page and log in "
            f"(`hf auth login`).{note} ({err})"
        ) from err
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as err:
        raise DataSourceError(
            f"cannot load dataset {dataset_id!r} (config {config.name!r}, split "
            f"{config.split or DEFAULT_SPLIT!r}, revision {config.revision!r}): {err}{note}"
        ) from err


def dataset_utterances(
    dataset: AnyDataset, config: SourceConfig, origin: str
) -> Iterator[Utterance]:
    """Turn the rows of a ``datasets`` dataset into utterances, without decoding audio."""
    rows: Iterable[Mapping[str, Any]]
    columns = dataset.column_names
    if columns is None:  # a stream whose features are unknown until the first row
        first_rows = iter(dataset)
        first = next(first_rows, None)
        if first is None:
            return
        columns, rows = list(first), itertools.chain([first], first_rows)
    audio_col = pick_column(
        columns, config.audio_column, DEFAULT_AUDIO_COLUMN, AUDIO_COLUMN_CANDIDATES, "audio"
    )
    text_col = pick_column(
        columns, config.text_column, DEFAULT_TEXT_COLUMN, TEXT_COLUMN_CANDIDATES, "text"
    )
    speaker_col = optional_column(columns, SPEAKER_COLUMN_CANDIDATES)
    wanted = [audio_col, text_col, speaker_col, "id", "duration"]
    keep = [c for c in dict.fromkeys(wanted) if c in columns]
    if dataset.features is not None and isinstance(dataset.features[audio_col], datasets.Audio):
        dataset = dataset.cast_column(audio_col, datasets.Audio(decode=False))
    if dataset.column_names is not None:
        dataset = dataset.select_columns(keep)
        rows = _rows(dataset)
    base = Path(origin) if os.path.isdir(origin) else None
    for index, row in enumerate(rows):
        audio = _audio_value(row[audio_col], base, f"{origin} row {index}")
        path_id = audio if isinstance(audio, str) else _audio_name(row[audio_col])
        speaker = row.get(speaker_col) if speaker_col else None
        yield Utterance(
            id=str(row.get("id") or path_id or f"{origin}[{index}]"),
            audio=audio,
            text=row[text_col] or "",
            duration=duration_value(row.get("duration"), f"{origin} row {index}"),
            speaker=None if speaker in (None, "") else str(speaker),
        )


def _rows(dataset: AnyDataset) -> Iterator[Mapping[str, Any]]:
    if isinstance(dataset, datasets.IterableDataset):
        yield from dataset
        return
    for batch in dataset.iter(batch_size=ROWS_PER_BATCH):
        names = list(batch)
        for values in zip(*batch.values(), strict=True):
            yield dict(zip(names, values, strict=True))


def _audio_value(value: Any, base: Path | None, where: str) -> str | bytes:
    """Encoded bytes when the row embeds them, else the (absolute) file path."""
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, str) and value:
        if base is not None and not os.path.isabs(value) and "://" not in value:
            return os.path.normpath(base / value)
        return value
    raise DataSourceError(
        f"{where}: the audio column holds neither file bytes nor a path ({type(value).__name__}); "
        "decoded arrays are not supported: keep the audio as files (Audio(decode=False))"
    )


def _audio_name(value: Any) -> str | None:
    return value.get("path") if isinstance(value, Mapping) else None
