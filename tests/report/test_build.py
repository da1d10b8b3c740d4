"""The whole page: its numbers are the predictions files', and it renders offline in Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asr_lightning.errors import ConfigError, DataSourceError
from asr_lightning.report.build import ReportOptions, write_report
from asr_lightning.report.page import percent
from tests.browser_support import open_page
from tests.report.conftest import prediction_records, write_lines


def page_data(page: str) -> dict:
    """The JSON the page carries."""
    found = re.search(r'<script type="application/json" id="report-data">\n(.*?)\n</script>',
                      page, re.S)  # fmt: skip
    return json.loads(found.group(1))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sums(path: Path) -> dict[str, int]:
    keys = ("word_errors", "ref_words", "char_errors", "ref_chars")
    return {key: sum(r[key] for r in _records(path) if key in r) for key in keys}


@pytest.fixture
def two_sets(an4_predictions: Path, an4_manifest: Path, tmp_path: Path) -> list[Path]:
    """The AN4 set and a second set with an unreadable utterance scored and one excluded."""
    records = prediction_records(an4_manifest, count=8)
    records[0] |= {
        "hypothesis": "",
        "confidence": None,
        "unreadable": "decode failed: x",
        "word_errors": records[0]["ref_words"],
        "char_errors": records[0]["ref_chars"],
    }
    records[1] = {
        "id": records[1]["id"],
        "reference": records[1]["reference"],
        "hypothesis": "",
        "confidence": None,
        "unreadable": "decode failed: y",
    }  # excluded: no counts
    return [an4_predictions, write_lines(tmp_path / "test_other.jsonl", records)]  # fmt: skip


def test_the_numbers_in_the_page_are_the_files_numbers(two_sets: list[Path], tmp_path: Path):
    page = write_report(two_sets, tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    an4, other = page_data(page)["sets"]
    for data, path in ((an4, two_sets[0]), (other, two_sets[1])):
        expected = sums(path)
        assert {key: data[key] for key in expected} == expected
        assert data["wer"] == expected["word_errors"] / expected["ref_words"]
        assert data["cer"] == expected["char_errors"] / expected["ref_chars"]
        assert (
            data["substitutions"] + data["deletions"] + data["insertions"]
            == (expected["word_errors"])
        )
        assert f'<b class="wer">{percent(data["wer"])}</b>' in page  # the summary table
        assert f"WER <b>{percent(data['wer'])}</b>" in page  # the set's section
    assert (an4["name"], an4["utterances"], an4["scored"], an4["unreadable"]) == ("an4", 60, 60, 0)
    assert (other["name"], other["utterances"], other["scored"], other["unreadable"]) == (
        "other", 8, 7, 2,
    )  # fmt: skip
    assert 0 <= an4["calibration"]["expected_error"] <= 1
    assert other["calibration"]["utterances"] == 6  # the unreadable ones have no confidence
    assert "linked: the run could not read it" in page  # not decoded again
    for chart in ("WER by duration", "WER by speaker", "Confidence against errors"):
        assert page.count(f'aria-label="{chart}') == 2
    wrong = [sum(r.get("word_errors", 0) > 0 for r in _records(path)) for path in two_sets]
    assert page.count("<audio ") == sum(min(ReportOptions().worst, n) for n in wrong)


def test_the_page_renders_offline_in_chromium_and_plays_its_clips(two_sets, tmp_path: Path):
    report = write_report(two_sets, tmp_path / "report.html", ReportOptions(worst=5))
    requested = []
    with open_page() as (page, errors):
        page.on("request", lambda request: requested.append(request.url))
        page.goto(report.resolve().as_uri())
        assert page.title() == "Evaluation report"
        assert page.locator("section h2").all_inner_texts() == ["an4", "other"]
        assert page.locator("figure svg").count() == 6
        assert page.locator(".align .S").count() + page.locator(".align .D").count() > 0
        duration = page.evaluate(
            """() => new Promise((done, fail) => {
                const audio = document.querySelector("audio");
                audio.addEventListener("loadedmetadata", () => done(audio.duration));
                audio.addEventListener("error", () => fail(String(audio.error.code)));
                audio.load();
            })"""
        )
    assert not errors.messages, errors.messages
    assert 0.3 < duration < 20  # an AN4 clip, decoded from its data: URI
    assert all(url.startswith(("file:", "data:")) for url in requested), requested
    assert not re.search(r'(src|href)="https?:', report.read_text(encoding="utf-8"))


def test_without_embedding_the_players_link_to_the_files(an4_predictions: Path, tmp_path: Path):
    options = ReportOptions(worst=3, embed_audio=False)
    page = write_report([an4_predictions], tmp_path / "r.html", options).read_text()
    assert page.count('<audio controls preload="none" src="file://') == 3
    assert "data:audio" not in page


def test_bad_input_is_named(an4_predictions: Path, tmp_path: Path):
    with pytest.raises(DataSourceError, match="two predictions files hold sets of one name"):
        write_report([an4_predictions, an4_predictions], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="at least one predictions file"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="worst must be >= 0"):
        ReportOptions(worst=-1)
