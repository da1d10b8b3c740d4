"""Word and character error rates: per utterance (jiwer) and per evaluation set (torchmetrics).

Metric names are one scheme everywhere: ``<stage>/wer`` with a single evaluation set, and
``<stage>/<set name>/wer`` for each set when there are several, the first set's value also being
logged as ``<stage>/wer`` so a checkpoint callback can always monitor ``val/wer``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import torch
from torchmetrics.text import CharErrorRate, WordErrorRate

#: The error rates computed for every evaluation set.
ERROR_RATES = ("wer", "cer")


def utterance_errors(reference: str, hypothesis: str) -> dict[str, int]:
    """Edit-distance counts of one utterance, for per-utterance reports.

    Summing ``word_errors`` and ``ref_words`` over a set and dividing gives the corpus WER that
    :class:`ErrorRates` reports (likewise for characters, spaces included).

    Args:
        reference: the normalized reference transcript.
        hypothesis: the model's transcript.

    Returns:
        ``{"word_errors", "ref_words", "char_errors", "ref_chars"}`` as integers.
    """
    words = jiwer.process_words(reference, hypothesis)
    chars = jiwer.process_characters(reference, hypothesis)
    return {
        "word_errors": words.substitutions + words.deletions + words.insertions,
        "ref_words": words.hits + words.substitutions + words.deletions,
        "char_errors": chars.substitutions + chars.deletions + chars.insertions,
        "ref_chars": chars.hits + chars.substitutions + chars.deletions,
    }


def set_name(index: int, names: Sequence[str] | None) -> str:
    """Name of evaluation set ``index``: its given name, else its index as text.

    Args:
        index: the dataloader index Lightning passes to the step.
        names: the names of the sets in dataloader order, if known.
    """
    if names is not None and index < len(names):
        return names[index]
    return str(index)


def metric_keys(stage: str, metric: str, name: str, index: int, num_sets: int) -> list[str]:
    """Every key a metric of one evaluation set is logged under.

    Args:
        stage: ``"val"`` or ``"test"``.
        metric: ``"wer"``, ``"cer"`` or ``"loss"``.
        name: the set's name (see :func:`set_name`).
        index: the set's dataloader index.
        num_sets: how many evaluation sets this stage has.
    """
    if num_sets <= 1:
        return [f"{stage}/{metric}"]
    keys = [f"{stage}/{name}/{metric}"]
    if index == 0:
        keys.append(f"{stage}/{metric}")
    return keys


class ErrorRates(torch.nn.Module):
    """Corpus WER and CER of each evaluation set, accumulated batch by batch.

    Metrics for a set are created on its first batch, on the device of that batch's tensors;
    ``compute`` synchronises across processes (torchmetrics does) and resets them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.per_set = torch.nn.ModuleDict()

    def update(
        self,
        index: int,
        hypotheses: Sequence[str],
        references: Sequence[str],
        device: torch.device,
    ) -> None:
        """Add one batch of set ``index`` (an empty batch only makes sure the set exists).

        Args:
            index: the dataloader index of the set.
            hypotheses: the model's transcripts.
            references: the normalized reference transcripts, same order.
            device: where the metric states live.
        """
        key = str(index)
        if key not in self.per_set:
            rates = torch.nn.ModuleDict({"wer": WordErrorRate(), "cer": CharErrorRate()})
            self.per_set[key] = rates.to(device)
        if hypotheses:
            for metric in self.per_set[key].values():
                metric.update(list(hypotheses), list(references))

    def compute(self) -> dict[int, dict[str, torch.Tensor]]:
        """``{set index: {"wer": value, "cer": value}}`` for every set seen, then reset."""
        results = {}
        for key in sorted(self.per_set, key=int):
            rates = self.per_set[key]
            results[int(key)] = {name: rates[name].compute() for name in ERROR_RATES}
            for metric in rates.values():
                metric.reset()
        return results


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's per-utterance records, each utterance once, on every process.

    Distributed samplers repeat a few utterances to give each rank as many; the first record of
    each ``id`` is kept. Without ``torch.distributed`` this only removes repeats.

    Args:
        records: this process's records, each with an ``id``.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, records)
        records = [record for part in parts for record in part]
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        unique.setdefault(record["id"], record)
    return list(unique.values())


def write_jsonl(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write one JSON object per line (UTF-8, non-ASCII kept readable), creating the folder.

    Args:
        path: the file to (over)write.
        records: JSON-serialisable dicts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
