from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Wav2Vec2CTCTokenizer

from asr_lightning.errors import VocabularyError
from asr_lightning.text.normalize import TextNormalizer
from asr_lightning.text.vocab import (
    LabelEncoder,
    build_vocab,
    is_special_token,
    make_tokenizer,
    vocab_case,
)

TRAIN = ["ENTER SIX TWO", "RUBOUT G M E F", "IT'S YES"]
HELD_OUT = ["QUIZ ZERO"]
BASE_960H_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4} | {
    c: i for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVK'XJQZ", start=5)
}
TEXTS = ["ENTER SIX TWO", "IT'S", "A", "", " LEADING AND TRAILING ", "TWO  SPACES", "Q?Z"]


def test_build_vocab_layout_and_order():
    vocab = build_vocab(TRAIN)
    assert list(vocab.items())[:3] == [("<pad>", 0), ("<unk>", 1), ("|", 2)]
    characters = list(vocab)[3:]
    assert characters == sorted(set("".join(TRAIN)) - {" "})
    assert list(vocab.values()) == list(range(len(vocab)))


def test_build_vocab_is_deterministic():
    assert build_vocab(TRAIN) == build_vocab(reversed(TRAIN)) == build_vocab(iter(TRAIN * 2))
    assert list(build_vocab(TRAIN)) == list(build_vocab(reversed(TRAIN)))


def test_only_training_transcripts_define_the_vocabulary():
    vocab = build_vocab(TRAIN)
    assert "Q" not in vocab and "Z" not in vocab
    tokenizer = make_tokenizer(vocab)
    ids = LabelEncoder(tokenizer)("QUIZ")
    assert ids.count(vocab["<unk>"]) == 2


def test_build_vocab_rejects_delimiter_and_empty_input():
    with pytest.raises(VocabularyError, match="delimiter"):
        build_vocab(["A|B"])
    with pytest.raises(VocabularyError, match="no characters"):
        build_vocab(["", "  "])
    with pytest.raises(VocabularyError, match="'_'"):
        build_vocab(["A_B"], word_delimiter="_")
    assert list(build_vocab(["A B|"], word_delimiter="_")) == ["<pad>", "<unk>", "_", "A", "B", "|"]


def test_make_tokenizer_settings(tmp_path):
    vocab = build_vocab(TRAIN)
    tokenizer = make_tokenizer(vocab, directory=tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "vocab.json").read_text()) == vocab
    assert tokenizer.get_vocab() == vocab
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1
    assert tokenizer.bos_token is None and tokenizer.eos_token is None
    assert tokenizer.do_lower_case is False and tokenizer.word_delimiter_token == "|"
    assert len(tokenizer) == len(vocab)


def test_make_tokenizer_rejects_bad_vocabularies():
    with pytest.raises(VocabularyError, match="lacks"):
        make_tokenizer({"<pad>": 0, "a": 1})
    with pytest.raises(VocabularyError, match="ids must be"):
        make_tokenizer({"<pad>": 0, "<unk>": 1, "|": 2, "a": 5})


@pytest.mark.parametrize("source", ["built", "base-960h"])
def test_label_encoder_fast_path_matches_tokenizer(source, tmp_path):
    if source == "built":
        tokenizer = make_tokenizer(build_vocab(TRAIN + HELD_OUT))
    else:
        (tmp_path / "vocab.json").write_text(json.dumps(BASE_960H_VOCAB))
        tokenizer = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    encoder = LabelEncoder(tokenizer)
    assert encoder.is_char_level
    for text in [*TEXTS, "lower case", "tab\there", "with <unk> token"]:
        assert encoder(text) == tokenizer(text).input_ids, text


def test_label_ids_round_trip_through_decode():
    tokenizer = make_tokenizer(build_vocab(TRAIN))
    encoder = LabelEncoder(tokenizer)
    for text in TRAIN + ["EXIT TEN", "GO"]:
        ids = encoder(text)
        assert tokenizer.decode(ids, group_tokens=False) == text
    # Greedy CTC output: repeats collapse, blanks (= <pad>, id 0) vanish.
    blank = tokenizer.pad_token_id
    ids = encoder("SEE")
    ctc = [ids[0], ids[0], blank, ids[1], blank, ids[2], ids[2]]
    assert tokenizer.batch_decode([ctc]) == ["SEE"]


def test_label_encoder_falls_back_for_subword_tokenizers():
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "▁the": 4, "▁": 5}
    vocab |= {c: i for i, c in enumerate("thecas", start=6)}
    backend = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>"
    )
    encoder = LabelEncoder(tokenizer)
    assert not encoder.is_char_level
    assert encoder("the cat") == tokenizer("the cat", add_special_tokens=False).input_ids
    assert 2 not in encoder("the cat")  # no BOS in CTC labels


def test_vocab_case_and_special_tokens():
    assert vocab_case(BASE_960H_VOCAB) == "upper"
    assert vocab_case(build_vocab(["abc d"])) == "lower"
    assert vocab_case(["a", "B", "<pad>"]) == "mixed"
    assert vocab_case(["<PAD>", "[UNK]", "1", "中"]) == "none"
    assert all(map(is_special_token, ["<pad>", "</s>", "[PAD]", "<0x41>"]))
    assert not any(map(is_special_token, ["<", "[", "<>", "a", "▁the"]))


def test_normalize_then_build_then_normalize_is_stable():
    raw = ["Enter six, two!", "It’s   yes."]
    clean = TextNormalizer(case="upper")
    vocab = build_vocab(clean(t) for t in raw)
    normalizer = TextNormalizer.from_tokenizer(make_tokenizer(vocab))
    assert [normalizer(t) for t in raw] == ["ENTER SIX TWO", "IT'S YES"]
