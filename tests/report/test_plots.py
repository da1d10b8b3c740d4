"""Charts come out as inline SVG elements with their labels as text."""

from __future__ import annotations

from asr_lightning.report.plots import reliability, wer_bars
from asr_lightning.report.stats import Group, Rates


def test_bars_and_the_reliability_diagram_are_svg_with_text_labels():
    groups = [
        Group("fcaw", Rates(utterances=3, word_errors=2, ref_words=8, with_errors=1), 0.15),
        Group("mjwl", Rates(utterances=1, word_errors=0, ref_words=4), 0.95),
    ]
    bars = wer_bars(groups, "WER by speaker", "speaker")
    assert bars.startswith("<svg") and bars.rstrip().endswith("</svg>")
    assert "<?xml" not in bars and "<!DOCTYPE" not in bars
    assert all(label in bars for label in ("fcaw", "mjwl", "25.0% (3)", "WER by speaker"))
    assert bars == wer_bars(groups, "WER by speaker", "speaker")  # the same page every time
    diagram = reliability(groups)
    assert diagram.startswith("<svg") and "error-free utterances" in diagram
