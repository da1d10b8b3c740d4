"""An evaluation report: the predictions files of a test run in, one self-contained HTML page out.

Each file is one evaluation set. For each the page shows its WER and CER, WER by duration and by
speaker, the commonest substitutions, deletions and insertions, the worst utterances aligned word
by word with a player for each, and, when the records carry confidences, how well they predict
errors. Everything (styles, charts, clips) is inside the page, which loads nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asr_lightning.errors import ConfigError, DataSourceError
from asr_lightning.report import plots
from asr_lightning.report.audio import ClipEmbedder, Player
from asr_lightning.report.page import SetReport, WorstUtterance, render_page
from asr_lightning.report.records import EvaluationSet, ScoredUtterance, read_predictions
from asr_lightning.report.stats import (
    align,
    by_confidence,
    by_duration,
    by_speaker,
    calibration,
    error_counts,
    rates,
    worst,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows.

    Args:
        worst: Worst utterances listed per set (most word errors first).
        top_errors: Substitutions, deletions and insertions listed per set, each.
        max_speakers: Speakers charted per set (highest WER first).
        embed_audio: Embed the worst utterances' clips in the page (Ogg Opus, 16 kHz); if
            false, or past the caps below, the players link to the audio files.
        max_clip_kb: Largest encoded clip embedded, in KiB (256: about a minute of speech).
        max_audio_mb: Embedded audio of the whole page at most, in MiB.
    """

    worst: int = 20
    top_errors: int = 15
    max_speakers: int = 25
    embed_audio: bool = True
    max_clip_kb: int = 256
    max_audio_mb: float = 16.0

    def __post_init__(self) -> None:
        for name in ("worst", "top_errors", "max_speakers", "max_clip_kb", "max_audio_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"report {name} must be >= 0, got {getattr(self, name)}")


def set_report(data: EvaluationSet, options: ReportOptions, clips: ClipEmbedder) -> SetReport:
    """The statistics, charts and worst utterances of one set."""
    utterances = data.utterances
    durations = by_duration(utterances)
    speakers = by_speaker(utterances)
    confidences = by_confidence(utterances)
    charts = {}
    if durations:
        charts["WER by duration"] = plots.wer_bars(durations, "WER by duration", "duration")
    shown = speakers[: options.max_speakers]
    if shown:
        title = f"WER by speaker ({len(shown)} of {len(speakers)}, highest WER first)"
        charts["WER by speaker"] = plots.wer_bars(shown, title, "speaker")
    if confidences:
        charts["Confidence against errors"] = plots.reliability(confidences)
    listed = [
        WorstUtterance(utt, align(utt.reference, utt.hypothesis), _player(utt, options, clips))
        for utt in worst(utterances, options.worst)
    ]
    return SetReport(
        name=data.name,
        path=data.path,
        utterances=len(utterances),
        unreadable=sum(u.unreadable is not None for u in utterances),
        rates=rates(utterances),
        errors=error_counts(utterances),
        top_errors=options.top_errors,
        durations=durations,
        speakers=shown,
        speaker_count=len(speakers),
        confidences=confidences,
        calibration=calibration(confidences),
        worst=listed,
        charts=charts,
    )


def _player(utt: ScoredUtterance, options: ReportOptions, clips: ClipEmbedder) -> Player:
    """The clip embedded; linked when embedding is off or the run could not read it."""
    if options.embed_audio and utt.unreadable is None:
        return clips.player(utt.audio)
    if utt.audio is None:
        return Player(None, False, "no audio file in the record")
    note = "linked" if utt.unreadable is None else "linked: the run could not read it"
    return Player(Path(utt.audio).absolute().as_uri(), False, note)


def write_report(
    predictions: Sequence[str | Path],
    output: str | Path,
    options: ReportOptions | None = None,
    title: str = "Evaluation report",
) -> Path:
    """Write the report of ``predictions`` (one JSON-lines file per set) to ``output``.

    Args:
        predictions: The files ``asr-lightning test`` writes (``test_<set>.jsonl``).
        output: The HTML file to (over)write; its folder is created.
        options: What to show; the defaults of :class:`ReportOptions` when ``None``.
        title: The page's heading.

    Raises:
        ConfigError: no file is given, or an option is invalid.
        DataSourceError: a file is missing or malformed, or two files hold sets of one name.
    """
    options = options or ReportOptions()
    if not predictions:
        raise ConfigError("give at least one predictions file (test_<set>.jsonl)")
    sets = [read_predictions(path) for path in predictions]
    names = [s.name for s in sets]
    if len(set(names)) < len(names):
        raise DataSourceError(
            f"two predictions files hold sets of one name ({', '.join(map(str, predictions))}): "
            "give each set once (a set's name is its file name without test_ and .jsonl)"
        )
    clips = ClipEmbedder(options.max_clip_kb * 1024, int(options.max_audio_mb * 1024 * 1024))
    reports = [set_report(data, options, clips) for data in sets]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_page(reports, title), encoding="utf-8")
    log.info("wrote the evaluation report of %s to %s", ", ".join(names), output)
    return output
