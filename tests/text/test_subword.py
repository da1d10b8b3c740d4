"""Subword vocabularies trained on transcripts: layout, determinism, SentencePiece's own
segmentation, sizes that do not fit, and the label encoder on pieces."""

from __future__ import annotations

import re

import pytest
import sentencepiece
from transformers import AutoTokenizer, ParakeetTokenizer

from asr_lightning.errors import ConfigError, VocabularyError
from asr_lightning.text.subword import (
    _train_sentencepiece,
    make_subword_tokenizer,
    subword_kind,
    train_subword,
)
from asr_lightning.text.vocab import LabelEncoder

KINDS = ["bpe", "unigram"]


@pytest.fixture(scope="module")
def transcripts(shared_data) -> list[str]:
    """AN4's 948 training transcripts (upper case, no punctuation)."""
    lines = (shared_data / "an4/etc/an4_train.transcription").read_text().splitlines()
    return [line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "").strip() for line in lines]


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_transcripts_give_the_same_tokenizer(transcripts, kind):
    first = train_subword(transcripts, kind, 64)
    assert train_subword(list(transcripts), kind, 64) == first
    assert subword_kind(first) == {"bpe": "BPE", "unigram": "Unigram"}[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_the_tokenizer_segments_as_sentencepiece_does(transcripts, kind):
    processor = sentencepiece.SentencePieceProcessor(
        model_proto=_train_sentencepiece(iter(transcripts), kind, 64)
    )
    tokenizer = make_subword_tokenizer(train_subword(transcripts, kind, 64))
    for text in transcripts:
        assert tokenizer(text, add_special_tokens=False).input_ids == processor.encode(text)


@pytest.mark.parametrize("kind", KINDS)
def test_layout_round_trip_and_save(transcripts, kind, tmp_path):
    tokenizer = make_subword_tokenizer(train_subword(transcripts, kind, 64))
    vocab = tokenizer.get_vocab()
    assert len(vocab) == 64 and vocab["<pad>"] == 0 == tokenizer.pad_token_id
    assert vocab["<unk>"] == 1 == tokenizer.unk_token_id
    assert not hasattr(tokenizer, "word_delimiter_token")  # words start at ▁ pieces
    pieces = tokenizer.tokenize("ERASE TWO")
    assert pieces[0].startswith("▁") and sum(p.startswith("▁") for p in pieces) == 2  # a word each
    ids = tokenizer("ERASE TWO SIXTY", add_special_tokens=False).input_ids
    assert tokenizer.decode(ids, group_tokens=False) == "ERASE TWO SIXTY"
    # CTC output: repeats grouped, blanks dropped, as transformers' pipeline decodes it
    assert tokenizer.decode([0, ids[0], ids[0], 0, *ids[1:], 0]) == "ERASE TWO SIXTY"
    assert tokenizer.unk_token_id in tokenizer("ERASE é", add_special_tokens=False).input_ids

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert isinstance(loaded, ParakeetTokenizer) and loaded.get_vocab() == vocab
    assert loaded("ERASE TWO SIXTY", add_special_tokens=False).input_ids == ids


def _named_size(error: pytest.ExceptionInfo) -> int:
    return int(re.search(r"Set data.vocab_size to (\d+)", str(error.value)).group(1))


@pytest.mark.parametrize("kind", KINDS)
def test_a_size_that_does_not_fit_names_one_that_does(transcripts, kind):
    with pytest.raises(ConfigError, match="too large .* or less") as big:
        train_subword(transcripts, kind, 100_000)
    most = _named_size(big)
    assert len(make_subword_tokenizer(train_subword(transcripts, kind, most)).get_vocab()) == most

    with pytest.raises(ConfigError, match="too small .* or more") as few:
        train_subword(transcripts, kind, 8)
    least = _named_size(few)
    assert len(make_subword_tokenizer(train_subword(transcripts, kind, least)).get_vocab()) == least


def test_no_transcripts_no_tokenizer():
    with pytest.raises(VocabularyError, match="all empty"):
        train_subword(["", "  "], "bpe", 16)
    with pytest.raises(VocabularyError, match="not a tokenizers JSON"):
        make_subword_tokenizer("{}")


def test_labels_are_pieces_and_feasibility_counts_them(transcripts):
    tokenizer = make_subword_tokenizer(train_subword(transcripts, "bpe", 128))
    encoder = LabelEncoder(tokenizer)
    text = "ERASE TWO SIXTY"
    assert not encoder.is_char_level
    assert encoder(text) == tokenizer(text, add_special_tokens=False).input_ids
    assert encoder.count(text) == encoder(text)  # the labels, fewer than the characters
    assert len(encoder(text)) < len(text.replace(" ", ""))
