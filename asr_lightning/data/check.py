"""``asr-lightning data check``: scan a dataset once and report what training will see.

One pass reads every header (and, by default, decodes every file: a truncated or corrupt file
often has a valid header), then applies the training filters and looks at the transcripts:
utterance count and hours, a duration histogram, decode failures grouped by reason with their
files, what the filters would drop, and the characters of the transcripts (those outside the
vocabulary when one is given). Measured durations go into the :class:`DurationCache`, so that
training reads them instead of measuring again, and files found broken are skipped there.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from asr_lightning.audio.decode import DEFAULT_BACKENDS, SAMPLE_RATE, Backend, load_audio
from asr_lightning.data.durations import (
    DEFAULT_WORKERS,
    DurationCache,
    Measured,
    file_key,
    measure_durations,
)
from asr_lightning.data.filters import (
    TOO_SHORT,
    FilterReport,
    FilterRules,
    decode_reason,
    filter_utterances,
)
from asr_lightning.data.sources import Utterance
from asr_lightning.errors import AudioDecodeError
from asr_lightning.text.normalize import TextNormalizer

#: Edges of the duration histogram in seconds; the last bin is open-ended.
DURATION_BINS = (0.0, 1.0, 2.0, 5.0, 10.0, 18.0, 30.0)
#: A stated (manifest) duration further than this from the audio's is reported.
DURATION_TOLERANCE_S = 0.1
#: Files whose decoded peak is below this are reported as silent.
SILENCE_PEAK = 1e-4
#: Below this median peak the corpus is quiet: level normalization helps.
QUIET_MEDIAN_PEAK = 0.3
#: Above this share of utterances dropped as too short, the report suggests a lower limit.
TOO_SHORT_WARNING_FRACTION = 0.02
#: Characters and files listed per item in :meth:`DataReport.render`.
TOP_CHARACTERS = 40
LISTED_FILES = 10


@dataclass
class DataReport:
    """What a scan of a dataset found (see :func:`check_source`)."""

    utterances: int
    seconds: float  # audio that could be read
    kept_seconds: float  # audio kept by the filters
    histogram: dict[str, int]  # duration bin label -> utterances
    filter: FilterReport
    rules: FilterRules
    decoded: bool  # every file decoded, not only its header read
    decode_failures: dict[str, list[str]] = field(default_factory=dict)  # reason -> files
    skipped_at_load: dict[str, list[str]] = field(default_factory=dict)  # reason -> rows
    speakers: int | None = None
    characters: Counter[str] = field(default_factory=Counter)  # normalized transcripts
    oov_characters: Counter[str] | None = None  # None: no vocabulary given
    duration_mismatches: list[tuple[str, float, float]] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    median_peak: float | None = None
    shortest_s: float | None = None
    longest_s: float | None = None

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def kept_hours(self) -> float:
        return self.kept_seconds / 3600.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable form (``data check --json``)."""
        return {
            "utterances": self.utterances,
            "hours": round(self.hours, 4),
            "kept_utterances": self.filter.kept,
            "kept_hours": round(self.kept_hours, 4),
            "speakers": self.speakers,
            "shortest_s": self.shortest_s,
            "longest_s": self.longest_s,
            "duration_histogram": dict(self.histogram),
            "decoded": self.decoded,
            "decode_failures": {r: list(files) for r, files in self.decode_failures.items()},
            "skipped_at_load": {r: list(rows) for r, rows in self.skipped_at_load.items()},
            "rules": {
                "min_duration_s": self.rules.min_duration_s,
                "max_duration_s": self.rules.max_duration_s,
                "output_frames_per_second": self.rules.output_frames_per_second,
            },
            "filter": self.filter.to_dict(),
            "characters": dict(self.characters.most_common()),
            "oov_characters": (
                None if self.oov_characters is None else dict(self.oov_characters.most_common())
            ),
            "duration_mismatches": [
                {"id": i, "stated_s": s, "measured_s": m} for i, s, m in self.duration_mismatches
            ],
            "silent": list(self.silent),
            "median_peak": self.median_peak,
        }

    def render(self) -> str:
        """The report as text for a terminal."""
        speakers = f" from {self.speakers} speakers" if self.speakers else ""
        lines = [f"utterances: {self.utterances}{speakers}, {self.hours:.2f} h of readable audio"]
        if self.shortest_s is not None:
            lines.append(f"durations: {self.shortest_s:.2f} s to {self.longest_s:.2f} s")
            lines.append("  " + " | ".join(f"{b}: {n}" for b, n in self.histogram.items()))
        how = "decoded in full" if self.decoded else "headers only: run without --no-decode"
        failed = sum(len(files) for files in self.decode_failures.values())
        lines.append(f"decode failures: {failed} ({how})")
        lines += _grouped(self.decode_failures)
        if self.skipped_at_load:
            lines.append("rows the source skipped:")
            lines += _grouped(self.skipped_at_load)
        rules = self.rules
        lines.append(
            f"filters ({rules.min_duration_s:g}-{rules.max_duration_s:g} s): "
            f"{self.filter.summary()}; {self.kept_hours:.2f} h kept"
        )
        for reason, examples in self.filter.examples.items():
            if not reason.startswith("decode failed"):
                lines.append(f"  {reason}: e.g. {', '.join(examples)}")
        lines.append(
            f"characters after normalization ({len(self.characters)}): " + _counts(self.characters)
        )
        if self.oov_characters is not None:
            lines.append(
                f"characters outside the vocabulary ({len(self.oov_characters)}): "
                + (_counts(self.oov_characters) or "none")
            )
        lines += self._warnings()
        return "\n".join(lines)

    def _warnings(self) -> list[str]:
        lines = []
        too_short = self.filter.dropped.get(TOO_SHORT, 0)
        if self.utterances and too_short / self.utterances > TOO_SHORT_WARNING_FRACTION:
            lines.append(
                f"{too_short} utterance(s) shorter than min_duration_s="
                f"{self.rules.min_duration_s:g}: lower it (data.min_duration_s) to train on them"
            )
        if self.duration_mismatches:
            shown = ", ".join(f"{i} ({s:.2f} vs {m:.2f} s)" for i, s, m in self.duration_mismatches)
            lines.append(
                f"stated durations off by more than {DURATION_TOLERANCE_S} s: "
                f"{len(self.duration_mismatches)}, e.g. {_clip(shown)}"
            )
        if self.silent:
            lines.append(f"silent files: {len(self.silent)}, e.g. {', '.join(self.silent[:5])}")
        if self.median_peak is not None:
            quiet = self.median_peak < QUIET_MEDIAN_PEAK
            quiet_hint = " (quiet: consider data.level: peak)" if quiet else ""
            lines.append(f"median peak level: {self.median_peak:.2f}{quiet_hint}")
        return lines


def _grouped(groups: Mapping[str, Sequence[str]]) -> list[str]:
    lines = []
    for reason, files in sorted(groups.items(), key=lambda item: -len(item[1])):
        more = f" and {len(files) - LISTED_FILES} more" if len(files) > LISTED_FILES else ""
        lines.append(f"  {reason}: {len(files)}: {', '.join(files[:LISTED_FILES])}{more}")
    return lines


def _counts(counter: Counter[str]) -> str:
    return " ".join(f"{c!r}:{n}" for c, n in counter.most_common(TOP_CHARACTERS))


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_source(
    utterances: Sequence[Utterance],
    rules: FilterRules = FilterRules(),  # noqa: B008 - frozen, so a shared default is safe
    normalizer: Callable[[str], str] | None = None,
    vocabulary: Mapping[str, int] | None = None,
    cache: DurationCache | None = None,
    progress: bool = False,
    *,
    decode: bool = True,
    skipped_at_load: Mapping[str, Sequence[str]] | None = None,
    backends: Sequence[Backend] = DEFAULT_BACKENDS,
    workers: int = DEFAULT_WORKERS,
) -> DataReport:
    """Scan ``utterances`` once and report what training on them would see.

    Args:
        utterances: The dataset, e.g. from :func:`~asr_lightning.data.sources.load_source`.
        rules: The training filters to apply.
        normalizer: Maps raw transcripts to training text; ``None``: built from ``vocabulary``,
            or punctuation removal only when there is no vocabulary either.
        vocabulary: The model's ``token -> id`` map; ``None`` reports the character inventory
            without out-of-vocabulary counts.
        cache: Durations cache shared with training; results found here are stored there.
        progress: Show progress bars.
        decode: Decode every file in full (finds corrupt audio whose header is fine).
        skipped_at_load: Rows the source skipped (``LoadedSource.skipped``), to report them.
        backends: Decoders tried in turn.
        workers: Threads reading and decoding files.
    """
    measured = measure_durations(
        utterances, cache, progress, verify=True, backends=backends, workers=workers
    )
    peaks: dict[str, float] = {}
    if decode:
        measured = _decode_all(utterances, measured, cache, peaks, progress, backends, workers)
    if normalizer is None:
        normalizer = (
            TextNormalizer.from_vocab(vocabulary) if vocabulary is not None else TextNormalizer()
        )
    kept, filter_report = filter_utterances(utterances, measured, rules, normalizer)
    seconds = [d for d in measured if not isinstance(d, AudioDecodeError)]
    report = DataReport(
        utterances=len(utterances),
        seconds=float(sum(seconds)),
        kept_seconds=float(sum(item.duration for item in kept)),
        histogram=duration_histogram(seconds),
        filter=filter_report,
        rules=rules,
        decoded=decode,
        decode_failures=_failures(utterances, measured),
        skipped_at_load={r: list(rows) for r, rows in (skipped_at_load or {}).items()},
        speakers=len({u.speaker for u in utterances if u.speaker}) or None,
        shortest_s=min(seconds, default=None),
        longest_s=max(seconds, default=None),
        silent=sorted(name for name, peak in peaks.items() if peak < SILENCE_PEAK),
        median_peak=statistics.median(peaks.values()) if peaks else None,
    )
    report.characters, report.oov_characters = _characters(utterances, normalizer, vocabulary)
    report.duration_mismatches = [
        (u.id, u.duration, d)
        for u, d in zip(utterances, measured, strict=True)
        if u.duration is not None
        and not isinstance(d, AudioDecodeError)
        and abs(u.duration - d) > DURATION_TOLERANCE_S
    ]
    return report


def duration_histogram(seconds: Sequence[float]) -> dict[str, int]:
    """Utterances per duration bin (:data:`DURATION_BINS`), labelled ``"2-5 s"`` / ``">30 s"``."""
    edges = DURATION_BINS
    labels = [f"{a:g}-{b:g} s" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f">{edges[-1]:g} s")
    counts = [0] * len(labels)
    for value in seconds:
        counts[max(0, bisect.bisect_right(edges, value) - 1)] += 1
    return dict(zip(labels, counts, strict=True))


def _name(utt: Utterance) -> str:
    return utt.audio if isinstance(utt.audio, str) else utt.id


def _decode_all(
    utterances: Sequence[Utterance],
    measured: list[Measured],
    cache: DurationCache | None,
    peaks: dict[str, float],
    progress: bool,
    backends: Sequence[Backend],
    workers: int,
) -> list[Measured]:
    """Decode every readable file once; exact durations and failures replace header reads."""
    todo = {_name(u): u.audio for u, d in zip(utterances, measured, strict=True) if _ok(d)}

    def decode_one(source: str | bytes) -> tuple[Measured, float]:
        try:
            samples = load_audio(source, backends=backends)  # (n,) float32 at 16 kHz
        except AudioDecodeError as err:
            return err, 0.0
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        return samples.size / SAMPLE_RATE, peak

    results: dict[str, Measured] = {}
    with (
        ThreadPoolExecutor(max(1, workers)) as pool,
        tqdm(total=len(todo), disable=not progress, desc="decoding", unit="file") as bar,
    ):
        for name, (value, peak) in zip(todo, pool.map(decode_one, todo.values()), strict=True):
            results[name] = value
            if _ok(value):
                peaks[name] = peak
            bar.update()
    if cache is not None:
        entries = []
        for name, source in todo.items():
            if isinstance(source, str):
                try:
                    entries.append((file_key(source), results[name]))
                except OSError:
                    continue  # removed while we scanned: not worth caching
        cache.put_many(entries)
    pairs = zip(utterances, measured, strict=True)
    return [results.get(_name(u), d) if _ok(d) else d for u, d in pairs]


def _ok(value: Measured) -> bool:
    return not isinstance(value, AudioDecodeError)


def _failures(utterances: Sequence[Utterance], measured: Sequence[Measured]) -> dict[str, list]:
    groups: dict[str, list[str]] = {}
    for utt, value in zip(utterances, measured, strict=True):
        if isinstance(value, AudioDecodeError):
            groups.setdefault(decode_reason(value), []).append(_name(utt))
    return groups


def _characters(
    utterances: Sequence[Utterance],
    normalizer: Callable[[str], str],
    vocabulary: Mapping[str, int] | None,
) -> tuple[Counter[str], Counter[str] | None]:
    """Characters of the normalized transcripts, and those the vocabulary cannot spell."""
    characters: Counter[str] = Counter()
    for utt in utterances:
        characters.update(c for c in normalizer(utt.text) if not c.isspace())
    if vocabulary is None:
        return characters, None
    oov: Counter[str] = Counter()
    counter = getattr(normalizer, "oov_characters", None)
    for utt in utterances:
        if counter is not None:
            oov.update(counter(utt.text))
        else:
            oov.update(c for c in utt.text if c not in vocabulary and not c.isspace())
    return characters, oov
