"""CTCDecoder: the one function from logits and lengths to transcripts and word timestamps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_lightning.decoding.decoder import CTCDecoder, Word
from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions
from asr_lightning.errors import ConfigError
from asr_lightning.text.vocab import build_vocab, make_tokenizer

VOCAB = build_vocab(["ab ba"])  # <pad> <unk> | a b
TOKENIZER = make_tokenizer(VOCAB)
#: 320 samples per frame at 16 kHz: 20 ms frames
FRAME_S = 0.02


def peaky(path: str, frames: int | None = None) -> np.ndarray:
    """``(T, V)`` logits whose best path spells ``path``: ``-`` blank, ``_`` delimiter."""
    ids = [0 if c == "-" else VOCAB["|"] if c == "_" else VOCAB[c] for c in path]
    ids += [0] * ((frames or len(ids)) - len(ids))
    logits = np.full((len(ids), len(VOCAB)), -8.0, dtype=np.float32)
    logits[np.arange(len(ids)), ids] = 8.0
    return logits


def decoder(options: DecodingOptions = DEFAULT_DECODING) -> CTCDecoder:
    return CTCDecoder(TOKENIZER, blank_id=0, samples_per_frame=320, options=options)


def test_text_and_word_times_follow_the_path():
    decoded = decoder().decode(peaky("-aa-b__-bb-a--"))
    assert decoded.text == "ab ba"
    # "ab": frames 1..4 (end is the frame past the last b); "ba": frames 8..11
    assert decoded.words == [
        Word("ab", 1 * FRAME_S, 5 * FRAME_S, confidence=1.0),
        Word("ba", 8 * FRAME_S, 12 * FRAME_S, confidence=1.0),
    ]
    assert decoded.confidence == 1.0


def test_repeated_delimiters_and_edge_spaces_give_single_spaces():
    assert decoder().decode(peaky("_a_-_b_")).text == "a b"


def test_only_blanks_decode_to_nothing():
    decoded = decoder().decode(peaky("----"))
    assert decoded.text == "" and decoded.words == []


def test_a_padded_batch_is_cut_at_each_length():
    rows = [peaky("ab", frames=6), peaky("ba-aa-", frames=6)]
    logits = torch.tensor(np.stack(rows))
    texts = decoder().texts(logits, torch.tensor([2, 3]))  # the second row stops after "ba"
    assert texts == ["ab", "ba"]
    assert decoder().texts(logits.to(torch.bfloat16), [6, 6]) == ["ab", "baa"]


def test_beam_without_lm_agrees_with_greedy_on_peaky_logits():
    logits = peaky("-ab_-ba-")
    beam = decoder(DecodingOptions(method="beam", beam_width=4)).decode(logits)
    assert beam == decoder().decode(logits)


def test_an_lm_changes_the_words(tmp_path):
    # acoustics lean to "ba" on each letter; the LM has seen only "ab"
    logits = np.log(np.array([[1e-6, 1e-6, 1e-6, 0.45, 0.55], [1e-6, 1e-6, 1e-6, 0.55, 0.45]]))
    lm = write_arpa(tmp_path / "lm.arpa", *kneser_ney(["ab", "ab ab"], order=2))
    assert decoder().decode(logits).text == "ba"
    assert decoder(DecodingOptions(lm=str(lm), alpha=1.0)).decode(logits).text == "ab"


def test_a_sentencepiece_vocabulary_splits_words_at_word_starts():
    class Pieces:  # the tokenizer methods the decoder uses, over a ▁-piece vocabulary
        tokens = ["<blk>", "\u2581a", "b", "\u2581b"]

        def get_vocab(self):
            return {t: i for i, t in enumerate(self.tokens)}

        def convert_ids_to_tokens(self, ids):
            return [self.tokens[i] for i in ids]

        def decode(self, ids, **_):
            return "".join(self.tokens[i] for i in ids).replace("\u2581", " ").strip()

    pieces = CTCDecoder(Pieces(), blank_id=0, samples_per_frame=640)
    logits = np.full((5, 4), -8.0)
    logits[np.arange(5), [1, 2, 0, 3, 0]] = 8.0  # ▁a b - ▁b -
    decoded = pieces.decode(logits)
    assert decoded.text == "ab b"
    assert decoded.words == [Word("ab", 0.0, 0.08, 1.0), Word("b", 0.12, 0.16, 1.0)]


def test_options_are_checked_and_described(tmp_path):
    assert not DEFAULT_DECODING.beam and DEFAULT_DECODING.describe() == "greedy"
    with_lm = DecodingOptions(lm=str(tmp_path / "an4.arpa"), beam_width=8)
    assert with_lm.beam and with_lm.describe() == "beam 8 + LM an4.arpa (alpha 0.5, beta 1.0)"
    with pytest.raises(ConfigError, match="method must be auto, greedy or beam"):
        DecodingOptions(method="viterbi")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs beam search"):
        DecodingOptions(method="greedy", lm="an4.arpa")
