"""CTC prefix beam search: exact on small cases (CTC loss as the oracle), steered by an LM."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_lightning.decoding.beam import BeamSearchDecoder
from asr_lightning.decoding.greedy import greedy_decode_with_frames
from asr_lightning.decoding.lm import ArpaLM
from asr_lightning.decoding.ngram import kneser_ney
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.errors import ConfigError

TOKENS = ["<pad>", "<unk>", "|", "a", "b"]
EXHAUSTIVE = DecodingOptions(beam_width=10_000, token_min_logp=-np.inf, beam_prune_logp=-np.inf)


def _best_labelling(logits: np.ndarray, labels: list[int]) -> tuple[int, ...]:
    """The most probable label sequence by brute force, scored with torch's CTC loss."""
    log_probs = torch.log_softmax(torch.tensor(logits), -1)[:, None]  # (T, 1, V)
    frames = logits.shape[0]
    best, best_score = (), -np.inf
    for length in range(frames + 1):
        for seq in itertools.product(labels, repeat=length):
            target = torch.tensor([seq], dtype=torch.long).reshape(1, -1)
            loss = F.ctc_loss(
                log_probs,
                target,
                torch.tensor([frames]),
                torch.tensor([length]),
                reduction="sum",
                zero_infinity=False,
            )
            if -loss.item() > best_score:
                best, best_score = seq, -loss.item()
    return best


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_finds_the_most_probable_labelling(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(5, 3)) * 2.0  # blank, a, b
    decoder = BeamSearchDecoder(["<pad>", "a", "b"], blank_id=0, options=EXHAUSTIVE)
    assert tuple(decoder.decode(logits).ids) == _best_labelling(logits, [1, 2])


def test_peaky_logits_decode_like_greedy_with_frames():
    path = [0, 3, 3, 0, 2, 4, 0, 4, 4, 0]  # "a | b b" with a blank between the two b's
    logits = np.full((len(path), len(TOKENS)), -8.0)
    logits[np.arange(len(path)), path] = 8.0
    beam = BeamSearchDecoder(TOKENS, blank_id=0).decode(logits)
    greedy = greedy_decode_with_frames(torch.tensor(logits)[None], torch.tensor([10]), 0)[0]
    assert beam.ids == greedy.ids == [3, 2, 4, 4]
    assert beam.start_frames == greedy.start_frames == [1, 4, 5, 7]


def test_language_model_overrules_weak_acoustics():
    # Acoustics lean to "ba" (0.55 vs 0.45 on each letter); the LM has only seen "ab".
    logits = np.log(np.array([[0.0, 0.0, 0.0, 0.45, 0.55], [0.0, 0.0, 0.0, 0.55, 0.45]]) + 1e-9)
    lm = ArpaLM(*kneser_ney(["ab", "ab ab", "ab"], order=2))
    without = BeamSearchDecoder(TOKENS, 0).decode(logits)
    with_lm = BeamSearchDecoder(TOKENS, 0, lm=lm, options=DecodingOptions(alpha=1.0)).decode(logits)
    assert [TOKENS[i] for i in without.ids] == ["b", "a"]
    assert [TOKENS[i] for i in with_lm.ids] == ["a", "b"]


def test_sentencepiece_words_reach_the_lm():
    tokens = ["<blk>", "\u2581a", "\u2581b", "c"]  # words start with ▁, no delimiter token
    logits = np.log(np.array([[0.01, 0.44, 0.55, 0.0], [0.9, 0.0, 0.0, 0.1]]) + 1e-9)
    lm = ArpaLM(*kneser_ney(["a", "a a"], order=1))
    decoder = BeamSearchDecoder(
        tokens, 0, lm=lm, options=DecodingOptions(alpha=2.0), word_delimiter=None
    )
    assert [tokens[i] for i in decoder.decode(logits).ids] == ["\u2581a"]


class _RecordingLM(ArpaLM):
    """An ARPA LM that remembers the words it was asked to score."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def score(self, context: tuple[str, ...], word: str) -> float:
        self.asked.add(word)
        return super().score(context, word)


def test_the_lm_scores_whole_words_of_bpe_pieces_and_words_get_their_frames(shared_data):
    from asr_lightning.decoding.decoder import CTCDecoder
    from asr_lightning.text.subword import make_subword_tokenizer, train_subword

    lines = (shared_data / "an4/etc/an4_train.transcription").read_text().splitlines()
    texts = [
        line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "").strip() for line in lines
    ]
    tokenizer = make_subword_tokenizer(train_subword(texts, "bpe", 64))
    pieces = tokenizer.tokenize("TWO SIXTY")  # ['▁TWO', '▁SIX', 'TY']
    assert len(pieces) == 3 and pieces[1].startswith("▁") and not pieces[2].startswith("▁")
    ids = tokenizer.convert_tokens_to_ids(pieces)
    rival = tokenizer.convert_tokens_to_ids("EE")  # "SIXEE": no AN4 word
    frames = len(ids) * 2
    probs = np.full((frames, len(tokenizer)), 1e-6)
    probs[1::2, 0] = 1.0  # a blank after each piece
    for frame, token in enumerate(ids):
        probs[2 * frame, token] = 1.0
    probs[4, ids[2]], probs[4, rival] = 0.4, 0.6  # the acoustics lean to "SIXEE"
    logits = np.log(probs / probs.sum(-1, keepdims=True))
    lm = _RecordingLM(*kneser_ney(texts, order=3))
    options = DecodingOptions(method="beam", alpha=1.0, beta=0.0)

    without = CTCDecoder(tokenizer, 0, samples_per_frame=640, options=options).decode(logits)
    decoder = CTCDecoder(tokenizer, 0, samples_per_frame=640, options=options)
    decoder.beam_search.lm = lm
    decoded = decoder.decode(logits)

    assert without.text == "TWO SIXEE" and decoded.text == "TWO SIXTY"
    assert {"TWO", "SIXTY", "SIXEE"} <= lm.asked and not lm.asked & {"SIX", "TY", "EE", "▁SIX"}
    assert [(w.word, w.start, w.end) for w in decoded.words] == [
        ("TWO", 0.0, 0.04),
        ("SIXTY", 0.08, 0.2),  # from its first piece's frame to past its last's, 40 ms each
    ]


def test_bad_shapes_and_options_are_refused():
    with pytest.raises(ValueError, match="frames, vocab"):
        BeamSearchDecoder(TOKENS, 0).decode(np.zeros((1, 2, 5)))
    with pytest.raises(ConfigError, match="beam_width"):
        DecodingOptions(beam_width=0)
