"""WER/CER: per-utterance counts, torchmetrics per set checked against jiwer, naming, JSONL."""

from __future__ import annotations

import json

import jiwer
import pytest
import torch

from asr_lightning.model.metrics import (
    ErrorRates,
    gather_records,
    metric_keys,
    set_name,
    utterance_errors,
    write_jsonl,
)

PAIRS = [
    ("the cat sat on the mat", "the cat sat on mat"),
    ("hello world", "hello word"),
    ("a b c d", "a x b c d e"),
    ("speech recognition", "speech recognition"),
    ("one", ""),
]


def test_utterance_errors_count_words_and_characters():
    errors = utterance_errors("the cat sat", "the bat sat down")

    assert errors == {"word_errors": 2, "ref_words": 3, "char_errors": 6, "ref_chars": 11}


def test_utterance_errors_of_an_empty_reference_count_insertions():
    assert utterance_errors("", "uh") == {
        "word_errors": 1,
        "ref_words": 0,
        "char_errors": 2,
        "ref_chars": 0,
    }


def test_error_rates_agree_with_jiwer_per_set():
    rates = ErrorRates()
    references, hypotheses = zip(*PAIRS, strict=True)
    rates.update(0, hypotheses[:2], references[:2], torch.device("cpu"))
    rates.update(0, hypotheses[2:], references[2:], torch.device("cpu"))
    rates.update(1, ["hello"], ["hello there"], torch.device("cpu"))

    results = rates.compute()

    assert results[0]["wer"].item() == pytest.approx(jiwer.wer(list(references), list(hypotheses)))
    assert results[0]["cer"].item() == pytest.approx(jiwer.cer(list(references), list(hypotheses)))
    assert results[1]["wer"].item() == pytest.approx(0.5)


def test_summed_utterance_errors_give_the_corpus_rates():
    totals = [utterance_errors(ref, hyp) for ref, hyp in PAIRS]
    references, hypotheses = zip(*PAIRS, strict=True)

    wer = sum(t["word_errors"] for t in totals) / sum(t["ref_words"] for t in totals)
    cer = sum(t["char_errors"] for t in totals) / sum(t["ref_chars"] for t in totals)

    assert wer == pytest.approx(jiwer.wer(list(references), list(hypotheses)))
    assert cer == pytest.approx(jiwer.cer(list(references), list(hypotheses)))


def test_compute_resets_for_the_next_evaluation():
    rates = ErrorRates()
    rates.update(0, ["wrong"], ["right"], torch.device("cpu"))
    rates.compute()
    rates.update(0, ["right"], ["right"], torch.device("cpu"))

    assert rates.compute()[0]["wer"].item() == 0.0


def test_one_set_logs_plain_keys_and_several_sets_log_named_keys():
    assert metric_keys("val", "wer", "clean", 0, 1) == ["val/wer"]
    assert metric_keys("val", "wer", "clean", 0, 2) == ["val/clean/wer", "val/wer"]
    assert metric_keys("test", "cer", "other", 1, 2) == ["test/other/cer"]


def test_set_names_fall_back_to_the_index():
    assert set_name(1, ["clean", "other"]) == "other"
    assert set_name(2, ["clean", "other"]) == "2"
    assert set_name(0, None) == "0"


def test_records_are_deduplicated_and_written_as_json_lines(tmp_path):
    records = [{"id": "a", "hypothesis": "héllo"}, {"id": "b", "hypothesis": ""}]
    records.append(dict(records[0]))  # a distributed sampler repeated "a" to pad a rank

    path = write_jsonl(tmp_path / "predictions" / "test_0.jsonl", gather_records(records))

    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records[:2]
    assert "héllo" in lines[0]
