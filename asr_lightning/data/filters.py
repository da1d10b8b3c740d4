"""Which utterances are fit to train on, and a count of every one that is not.

An utterance is dropped, under exactly one reason (the first that applies, in this order), when:

- its audio could not be decoded (``decode failed: <reason>``);
- it is shorter than ``min_duration_s`` (``too short``) or longer than ``max_duration_s``
  (``too long``);
- its transcript is empty once normalized to the vocabulary
  (``empty transcript after normalization``);
- CTC cannot align its labels with the model's output frames (``ctc infeasible``): CTC needs one
  frame per label plus one blank between each pair of equal adjacent labels.

Nothing is dropped silently: :class:`FilterReport` counts every reason and keeps a few examples.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asr_lightning.data.sources import Utterance
from asr_lightning.errors import AudioDecodeError, ConfigError, NonFiniteAudioError

TOO_SHORT = "too short"
TOO_LONG = "too long"
EMPTY_TRANSCRIPT = "empty transcript after normalization"
CTC_INFEASIBLE = "ctc infeasible"
DECODE_FAILED = "decode failed"
#: Example ids kept per reason in a report.
MAX_EXAMPLES = 5
#: Decode failure reasons are cut to this many characters so that they group well.
MAX_REASON_CHARS = 120


@dataclass(frozen=True)
class FilterRules:
    """What an utterance needs to be kept.

    Args:
        min_duration_s: Shorter utterances are dropped (seconds).
        max_duration_s: Longer utterances are dropped (seconds); long ones dominate memory.
        output_frames_per_second: Frames per second of the model's output (about 50 for
            wav2vec2). When set, utterances whose labels CTC cannot align are dropped.
    """

    min_duration_s: float = 1.0
    max_duration_s: float = 18.0
    output_frames_per_second: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_duration_s <= self.max_duration_s:
            raise ConfigError(
                f"need 0 <= min_duration_s <= max_duration_s, got {self.min_duration_s} and "
                f"{self.max_duration_s}"
            )
        fps = self.output_frames_per_second
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ConfigError(f"output_frames_per_second must be a positive number, got {fps}")


@dataclass(frozen=True)
class KeptItem:
    """An utterance that passed the filters, with its duration and normalized transcript."""

    utterance: Utterance
    duration: float  # seconds
    text: str  # normalized transcript


@dataclass
class FilterReport:
    """How many utterances were kept, and how many were dropped for which reason."""

    total: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def drop(self, reason: str, example: str) -> None:
        """Count one dropped utterance (``example``: its id or file) under ``reason``."""
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example)

    def merge(self, other: FilterReport) -> FilterReport:
        """A new report counting both this one's utterances and ``other``'s."""
        merged = FilterReport(
            self.total + other.total, self.kept + other.kept, self.dropped + other.dropped
        )
        for reason in merged.dropped:
            examples = self.examples.get(reason, []) + other.examples.get(reason, [])
            merged.examples[reason] = examples[:MAX_EXAMPLES]
        return merged

    def summary(self) -> str:
        """One line: ``kept 940 of 948 (99.2%); dropped 8: too short 5, too long 3``."""
        share = 100.0 * self.kept / self.total if self.total else 100.0
        line = f"kept {self.kept} of {self.total} ({share:.1f}%)"
        if self.dropped_total:
            reasons = ", ".join(f"{reason} {n}" for reason, n in self.dropped.most_common())
            line += f"; dropped {self.dropped_total}: {reasons}"
        return line

    def to_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.dropped.most_common()),
            "examples": {reason: list(ids) for reason, ids in self.examples.items()},
        }


def decode_reason(err: AudioDecodeError) -> str:
    """``decode failed: <short reason>``, without the file name so that failures group."""
    if isinstance(err, NonFiniteAudioError):  # its reason counts the bad samples of each file
        return f"{DECODE_FAILED}: NaN or infinite samples"
    reason = err.reason.replace(str(err.source), "<file>")
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return f"{DECODE_FAILED}: {reason}"


#: A character followed by the same one (a lookahead, so "aaa" has two).
_REPEATED = re.compile(r"(.)(?=\1)", re.DOTALL)


def ctc_frames_needed(labels: Sequence[int] | str) -> int:
    """Output frames CTC needs: one per label, plus a blank between equal adjacent labels."""
    if isinstance(labels, str):  # a regex counts (overlapping) equal neighbours in C
        return len(labels) + len(_REPEATED.findall(labels))
    repeats = sum(1 for a, b in zip(labels[:-1], labels[1:], strict=True) if a == b)
    return len(labels) + repeats


def filter_utterances(
    utterances: Sequence[Utterance],
    durations: Sequence[float | AudioDecodeError],
    rules: FilterRules,
    normalizer: Callable[[str], str],
    label_length: Callable[[str], int | Sequence[int]] | None = None,
) -> tuple[list[KeptItem], FilterReport]:
    """Keep the utterances fit for training and count the others by reason.

    Args:
        utterances: The source's utterances.
        durations: One entry per utterance, from :func:`~asr_lightning.data.durations.
            measure_durations`: seconds, or the decode error.
        rules: Duration limits and the model's output frame rate.
        normalizer: Maps a raw transcript to the text the labels are made from.
        label_length: Maps normalized text to its label count, or to the labels themselves
            (then repeated labels are counted exactly). ``None``: one label per character.
            Only used when ``rules.output_frames_per_second`` is set. An integer count comes
            with repeats counted on the text's characters, exact for character vocabularies.
    """
    if len(durations) != len(utterances):
        raise ValueError(
            f"need one duration per utterance, got {len(durations)} for {len(utterances)}"
        )
    kept: list[KeptItem] = []
    report = FilterReport(total=len(utterances))
    for utt, duration in zip(utterances, durations, strict=True):
        reason, text = verdict(utt, duration, rules, normalizer, label_length)
        if reason is not None:
            report.drop(reason, utt.id)
        else:
            kept.append(KeptItem(utt, float(duration), text))  # type: ignore[arg-type]
    report.kept = len(kept)
    return kept, report


def verdict(
    utt: Utterance,
    duration: float | AudioDecodeError,
    rules: FilterRules,
    normalizer: Callable[[str], str],
    label_length: Callable[[str], int | Sequence[int]] | None,
) -> tuple[str | None, str]:
    """Why one utterance is dropped (``None``: kept) and its normalized text.

    Used per item by :func:`filter_utterances` and by the streaming dataset.
    """
    if isinstance(duration, AudioDecodeError):
        return decode_reason(duration), ""
    if duration < rules.min_duration_s:
        return TOO_SHORT, ""
    if duration > rules.max_duration_s:
        return TOO_LONG, ""
    text = normalizer(utt.text)
    if not text.strip():
        return EMPTY_TRANSCRIPT, text
    if rules.output_frames_per_second is not None:
        frames = math.floor(duration * rules.output_frames_per_second)
        labels = label_length(text) if label_length is not None else text
        count = labels if isinstance(labels, int) else len(labels)
        if frames >= 2 * count:  # enough for any labels: CTC needs at most 2 frames per label
            return None, text
        if isinstance(labels, int):
            needed = labels + ctc_frames_needed(text) - len(text)
        else:
            needed = ctc_frames_needed(labels)
        if frames < needed:
            return CTC_INFEASIBLE, text
    return None, text
