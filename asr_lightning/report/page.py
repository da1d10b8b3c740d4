"""The report's HTML: one page, its styles inline, its numbers also as JSON for machines.

The page holds a ``<script type="application/json" id="report-data">`` with each set's counts
and rates, the same numbers the tables show (tests read it; so can other tools).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from asr_lightning.report.audio import Player
from asr_lightning.report.records import ScoredUtterance
from asr_lightning.report.stats import AlignedWord, Calibration, ErrorCounts, Group, Rates

#: The marks of aligned words, by operation.
MARKS = {"equal": "", "substitute": "S", "delete": "D", "insert": "I"}
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1180px; padding: 0 16px; color: #1d232a; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #d5dbe1;
     padding-bottom: 4px; margin-top: 36px; } h3 { font-size: 15px; margin-top: 22px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e6e9ec; text-align: left;
         vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.meta, .note { color: #5b6670; font-size: 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { margin: 0; flex: 1 1 520px; max-width: 580px; } .chart svg { width: 100%; height: auto; }
.errors { display: flex; flex-wrap: wrap; gap: 28px; }
.align { display: flex; flex-wrap: wrap; gap: 3px; max-width: 640px; }
.w { display: inline-flex; flex-direction: column; padding: 1px 4px; border-radius: 3px;
     font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
.w span:last-child { color: #243b53; }
.w sup { font-size: 9px; font-weight: 700; }
.S { background: #fde2b6; } .D { background: #f9c9c4; } .I { background: #cfe6fb; }
.D span:first-child { text-decoration: line-through; }
.legend .w { flex-direction: row; gap: 4px; }
audio { width: 210px; height: 32px; }
"""


@dataclass(frozen=True)
class WorstUtterance:
    """A listed utterance with its word alignment and its player."""

    utterance: ScoredUtterance
    alignment: list[AlignedWord]
    player: Player


@dataclass(frozen=True)
class SetReport:
    """Everything the page shows of one evaluation set."""

    name: str
    path: Path
    utterances: int
    unreadable: int
    rates: Rates
    errors: ErrorCounts
    top_errors: int  # of each kind, listed
    durations: list[Group]
    speakers: list[Group]
    speaker_count: int
    confidences: list[Group]
    calibration: Calibration | None
    worst: list[WorstUtterance]
    charts: dict[str, str]  # title -> inline SVG


def render_page(reports: Sequence[SetReport], title: str) -> str:
    """The whole page of ``reports``."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title>',
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<p class="meta">WER and CER are summed errors over summed reference words (characters, '
        "spaces included), as <code>test/wer</code> and <code>test/cer</code> are logged.</p>",
        _summary(reports),
        *(_set_section(report) for report in reports),
        '<script type="application/json" id="report-data">',
        json.dumps({"sets": [summary_data(r) for r in reports]}).replace("</", "<\\/"),
        "</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def summary_data(report: SetReport) -> dict[str, Any]:
    """The numbers of one set, as the page's JSON holds them."""
    rates = report.rates
    return {
        "name": report.name,
        "file": str(report.path),
        "utterances": report.utterances,
        "scored": rates.utterances,
        "unreadable": report.unreadable,
        "word_errors": rates.word_errors,
        "ref_words": rates.ref_words,
        "char_errors": rates.char_errors,
        "ref_chars": rates.ref_chars,
        "wer": _finite(rates.wer),
        "cer": _finite(rates.cer),
        "substitutions": sum(report.errors.substitutions.values()),
        "deletions": sum(report.errors.deletions.values()),
        "insertions": sum(report.errors.insertions.values()),
        "calibration": None if report.calibration is None else vars(report.calibration),
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def percent(value: float) -> str:
    """``12.34%``, or ``n/a`` for a rate without a denominator."""
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}%"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(reports: Sequence[SetReport]) -> str:
    header = ["set", "utterances", "scored", "unreadable", "reference words", "substitutions",
              "deletions", "insertions", "WER", "CER", "file"]  # fmt: skip
    rows = []
    for report in reports:
        data = summary_data(report)
        rows.append([
            f'<a href="#set-{escape(report.name)}">{escape(report.name)}</a>',
            data["utterances"], data["scored"], data["unreadable"], data["ref_words"],
            data["substitutions"], data["deletions"], data["insertions"],
            f'<b class="wer">{percent(report.rates.wer)}</b>', percent(report.rates.cer),
            f'<span class="note">{escape(str(report.path))}</span>',
        ])  # fmt: skip
    return _table(header, rows, numeric=set(range(1, 10)))


def _set_section(report: SetReport) -> str:
    rates = report.rates
    parts = [
        f'<section id="set-{escape(report.name)}"><h2>{escape(report.name)}</h2>',
        f"<p>WER <b>{percent(rates.wer)}</b> ({rates.word_errors} errors in {rates.ref_words} "
        f"words), CER <b>{percent(rates.cer)}</b> ({rates.char_errors} in {rates.ref_chars} "
        f"characters), {rates.with_errors} of {rates.utterances} scored utterances with an "
        "error.</p>",
    ]
    if report.charts:
        charts = "".join(
            f'<figure class="chart" aria-label="{escape(t)}">{svg}</figure>'
            for t, svg in report.charts.items()
        )
        parts.append(f'<div class="charts">{charts}</div>')
    parts.append(_calibration(report))
    parts.append(_errors(report))
    parts.append(_worst(report))
    parts.append("</section>")
    return "\n".join(parts)


def _calibration(report: SetReport) -> str:
    summary = report.calibration
    if summary is None:
        return '<p class="note">No confidences in these records.</p>'
    return (
        f"<p>Confidence: mean <b>{summary.mean_confidence:.3f}</b> over {summary.utterances} "
        f"utterances, of which {100 * summary.accuracy:.1f}% are error-free; expected "
        f"calibration error <b>{summary.expected_error:.3f}</b> (the mean gap between a bin's "
        "confidence and its fraction of error-free utterances; 0 is perfectly calibrated).</p>"
    )


def _errors(report: SetReport) -> str:
    errors, count = report.errors, report.top_errors
    tables = [
        ("Substitutions", ["reference", "hypothesis", "count"],
         [[escape(r), escape(h), n] for (r, h), n in errors.substitutions.most_common(count)],
         {2}),
        ("Deletions", ["reference", "count"],
         [[escape(w), n] for w, n in errors.deletions.most_common(count)], {1}),
        ("Insertions", ["hypothesis", "count"],
         [[escape(w), n] for w, n in errors.insertions.most_common(count)], {1}),
    ]  # fmt: skip
    blocks = [
        f"<div><h3>{name}</h3>{_table(header, rows, numeric) if rows else '<p>none</p>'}</div>"
        for name, header, rows, numeric in tables
    ]
    return f'<div class="errors">{"".join(blocks)}</div>'


def aligned_words(words: Sequence[AlignedWord]) -> str:
    """Reference over hypothesis, word by word; substitutions, deletions and insertions marked
    S, D and I and coloured."""
    cells = []
    for word in words:
        mark = MARKS[word.operation]
        ref = escape(word.reference) if word.reference is not None else "&#8203;"
        hyp = escape(word.hypothesis) if word.hypothesis is not None else "&#8203;"
        sup = f"<sup>{mark}</sup>" if mark else ""
        cells.append(f'<span class="w {mark}"><span>{ref}{sup}</span><span>{hyp}</span></span>')
    return f'<div class="align">{"".join(cells)}</div>'


def _player(listed: WorstUtterance) -> str:
    player = listed.player
    if player.src is None:
        return f'<span class="note">{escape(player.note)}</span>'
    link = "" if player.embedded else f' <a href="{escape(player.src)}">file</a>'
    return (
        f'<audio controls preload="none" src="{escape(player.src)}"></audio>{link}'
        f'<br><span class="note">{escape(player.note)}</span>'
    )


def _worst(report: SetReport) -> str:
    if not report.worst:
        return "<h3>Worst utterances</h3><p>No utterance has a word error.</p>"
    legend = (
        '<p class="legend note">Reference above hypothesis: '
        '<span class="w S">S substituted</span> <span class="w D">D deleted</span> '
        '<span class="w I">I inserted</span></p>'
    )
    rows = []
    for rank, listed in enumerate(report.worst, start=1):
        utt = listed.utterance
        about = [f"<b>{escape(utt.id)}</b>"]
        if utt.speaker:
            about.append(f"speaker {escape(utt.speaker)}")
        if utt.duration_s is not None:
            about.append(f"{utt.duration_s:.2f} s")
        if utt.unreadable:
            about.append(f"unreadable: {escape(utt.unreadable)}")
        confidence = "" if utt.confidence is None else f"{utt.confidence:.3f}"
        rows.append([
            rank, "<br>".join(about), f"{utt.word_errors}/{utt.ref_words}", confidence,
            aligned_words(listed.alignment), _player(listed),
        ])  # fmt: skip
    header = ["#", "utterance", "errors/words", "confidence", "alignment", "audio"]
    title = f"<h3>Worst utterances ({len(report.worst)}, most word errors first)</h3>"
    return title + legend + _table(header, rows, numeric={0, 2, 3})
