"""Confidences from CTC posteriors: peak posterior per token, min per word, mean per utterance."""

from __future__ import annotations

import numpy as np
import pytest

from asr_lightning.decoding.confidence import log_softmax, token_confidences
from asr_lightning.decoding.decoder import CTCDecoder
from asr_lightning.decoding.greedy import greedy_path
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.text.vocab import build_vocab, make_tokenizer

VOCAB = build_vocab(["ab ba"])  # <pad> <unk> | a b
BLANK, DELIM, A, B = 0, VOCAB["|"], VOCAB["a"], VOCAB["b"]


def posteriors(rows: list[dict[int, float]]) -> np.ndarray:
    """``(T, V)`` log-probabilities: each row's given probabilities, the rest shared evenly."""
    probs = np.zeros((len(rows), len(VOCAB)))
    for frame, given in enumerate(rows):
        rest = (1.0 - sum(given.values())) / (len(VOCAB) - len(given))
        probs[frame] = rest
        for token, p in given.items():
            probs[frame, token] = p
    return np.log(probs)


def decoder(**options) -> CTCDecoder:
    return CTCDecoder(make_tokenizer(VOCAB), 0, 320, DecodingOptions(**options))


def test_log_softmax_normalizes_logits_and_keeps_log_probabilities():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    out = log_softmax(logits)
    assert np.allclose(np.exp(out).sum(axis=-1), 1.0)
    assert np.allclose(log_softmax(out), out, atol=1e-6)


def test_a_token_scores_its_peak_frame_a_word_its_weakest_token():
    # "a" run over frames 0-1 (0.6 then 0.9: peak 0.9), "b" on frame 3 at 0.5, then "ba"
    log_probs = posteriors(
        [{A: 0.6}, {A: 0.9}, {BLANK: 0.9}, {B: 0.5}, {DELIM: 0.8}, {B: 0.7}, {A: 0.95}]
    )
    path = greedy_path(log_probs, BLANK)
    assert path.ids == [A, B, DELIM, B, A]
    assert token_confidences(log_probs, path) == pytest.approx([0.9, 0.5, 0.8, 0.7, 0.95])
    decoded = decoder().decode(log_probs)
    assert decoded.text == "ab ba"
    assert [w.confidence for w in decoded.words] == pytest.approx([0.5, 0.7])
    assert decoded.confidence == pytest.approx(0.6)


def test_logits_and_their_log_softmax_give_the_same_confidences():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, len(VOCAB))).astype(np.float32) * 3
    raw, normalized = decoder().decode(logits), decoder().decode(log_softmax(logits))
    assert raw == normalized and raw.words
    assert all(0.0 < w.confidence <= 1.0 for w in raw.words)


def test_silence_is_scored_by_its_blank_posterior():
    decoded = decoder().decode(posteriors([{BLANK: 0.8}, {BLANK: 0.6}]))
    assert decoded.text == "" and decoded.confidence == pytest.approx(0.7)


def test_beam_search_scores_the_path_it_chose():
    log_probs = posteriors([{A: 0.55}, {BLANK: 0.9}, {B: 0.6}])
    greedy, beam = (
        decoder().decode(log_probs),
        decoder(method="beam", beam_width=4).decode(log_probs),
    )
    assert beam.text == greedy.text == "ab"
    assert beam.words[0].confidence == greedy.words[0].confidence == pytest.approx(0.55)
