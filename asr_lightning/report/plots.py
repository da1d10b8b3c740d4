"""The report's charts, drawn by matplotlib as inline SVG (text kept as text: small, crisp).

Figures are made with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: no
global figure state and no GUI backend, so drawing is safe in a training process.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.figure import Figure

from asr_lightning.report.stats import CONFIDENCE_BINS, Group, confidence_bin

#: SVG settings: text as ``<text>`` rather than paths, and ids that do not change between runs.
SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "asr-lightning"}
#: Figure width and height of one bar per group, in inches.
WIDTH_IN = 6.4
BAR_HEIGHT_IN = 0.26
BAR_COLOR = "#3b6ea8"
ACCENT_COLOR = "#c0392b"


def _svg(figure: Figure) -> str:
    """``figure`` as an ``<svg>`` element (no XML prolog, no fixed pixel size)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(SVG_RC):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _percent(value: float) -> float:
    return 0.0 if math.isnan(value) else 100 * value


def wer_bars(groups: Sequence[Group], title: str, ylabel: str) -> str:
    """Horizontal WER bars, one per group in the given order, each labelled with its WER and
    its utterance count."""
    height = 1.0 + BAR_HEIGHT_IN * max(1, len(groups))
    figure = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    axes = figure.add_subplot()
    values = [_percent(g.rates.wer) for g in groups]
    positions = range(len(groups))
    axes.barh(positions, values, color=BAR_COLOR, height=0.7)
    axes.set_yticks(positions, [g.label for g in groups])
    axes.invert_yaxis()  # the first group on top
    top = max(values, default=0.0) or 1.0
    axes.set_xlim(0, top * 1.3)
    for position, value, group in zip(positions, values, groups, strict=True):
        axes.text(value + top * 0.01, position, f"{value:.1f}% ({group.rates.utterances})",
                  va="center", fontsize=8)  # fmt: skip
    axes.set_xlabel("WER (%), utterances in brackets")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)


def reliability(groups: Sequence[Group], bins: int = CONFIDENCE_BINS) -> str:
    """Reliability diagram of :func:`~asr_lightning.report.stats.by_confidence`'s bins: the
    fraction of error-free utterances of each bin (bars) against its mean confidence (dots; a
    calibrated model's lie on the diagonal), and its WER."""
    figure = Figure(figsize=(WIDTH_IN, 3.6), layout="constrained")
    axes = figure.add_subplot()
    centers = [g.mean_confidence or 0.0 for g in groups]
    width = 1.0 / bins
    lows = [(confidence_bin(c, bins) or 0) * width for c in centers]  # a bin holds its mean
    accuracy = [1 - g.rates.with_errors / g.rates.utterances for g in groups]
    axes.bar(lows, accuracy, width=width * 0.92, align="edge", color=BAR_COLOR,
             label="error-free utterances")  # fmt: skip
    axes.plot(centers, accuracy, "o", color="black", markersize=4, label="at mean confidence")
    axes.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="calibrated")
    axes.plot([low + width / 2 for low in lows], [min(1.0, g.rates.wer) for g in groups], "s-",
              color=ACCENT_COLOR, markersize=4, label="WER (capped at 100%)")  # fmt: skip
    for low, group in zip(lows, groups, strict=True):
        axes.text(low + width / 2, 1.02, str(group.rates.utterances), ha="center", fontsize=7)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.1)
    axes.set_xlabel("utterance confidence (utterances per bin on top)")
    axes.set_ylabel("fraction")
    figure.legend(fontsize=7, loc="outside lower center", ncols=4, frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure)
