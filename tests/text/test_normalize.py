from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Wav2Vec2CTCTokenizer

from asr_lightning.errors import ConfigError
from asr_lightning.text.normalize import TextNormalizer

#: facebook/wav2vec2-base-960h's vocab.json: upper-case letters and the apostrophe.
BASE_960H_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4} | {
    c: i for i, c in enumerate("ETAONIHSRDLUMWCFGYPBVK'XJQZ", start=5)
}
LOWER_VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2} | {
    c: i for i, c in enumerate("'abcdefghijklmnopqrstuvwxyz", start=3)
}


def _ctc_tokenizer(vocab: dict[str, int], tmp_path) -> Wav2Vec2CTCTokenizer:
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab), encoding="utf-8")
    return Wav2Vec2CTCTokenizer(str(path))


@pytest.fixture()
def upper(tmp_path) -> TextNormalizer:
    return TextNormalizer.from_tokenizer(_ctc_tokenizer(BASE_960H_VOCAB, tmp_path))


@pytest.fixture()
def lower() -> TextNormalizer:
    return TextNormalizer.from_vocab(LOWER_VOCAB)


def test_upper_case_vocabulary_upper_cases(upper):
    assert upper.vocabulary == frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    assert upper("Hello, World!") == "HELLO WORLD"
    assert upper("ENTER six TWO") == "ENTER SIX TWO"


def test_lower_case_vocabulary_lower_cases(lower):
    assert lower("Hello, World!") == "hello world"


def test_mixed_vocabulary_keeps_case():
    mixed = TextNormalizer.from_vocab({"<pad>": 0, "|": 1, "a": 2, "A": 3, "b": 4})
    assert mixed("aA Ab c") == "aA Ab"


def test_explicit_case_overrides_vocabulary():
    assert TextNormalizer.from_vocab(LOWER_VOCAB, case="upper")("abc") == ""
    assert TextNormalizer(case="upper")("It's ok.") == "IT'S OK"
    assert TextNormalizer()("Keep Case") == "Keep Case"


def test_special_tokens_and_delimiter_are_not_characters(upper):
    for token in ("<pad>", "<s>", "</s>", "<unk>", "|", "<", ">", "/"):
        assert token not in upper.vocabulary
    assert upper("a <unk> b") == "A UNK B"
    assert upper("a|b") == "A B"


def test_drops_punctuation_and_collapses_whitespace(lower):
    text = '  "Well," she said; “it’s 50% done…” (really?)\t-  yes!\n'
    assert lower(text) == "well she said it's done really yes"
    assert lower.oov_characters(text) == Counter({"5": 1, "0": 1})


def test_word_separators_split_words(lower):
    assert lower("rock/paper—scissors") == "rock paper scissors"
    assert lower("well-known") == "wellknown"  # like the Hugging Face recipe


def test_custom_drop_characters():
    normalizer = TextNormalizer(drop_characters="#")
    assert normalizer("#tag, ok") == "tag, ok"


def test_vocabulary_characters_are_never_dropped():
    normalizer = TextNormalizer.from_vocab({"<pad>": 0, "|": 1, "a": 2, "-": 3, "?": 4})
    assert normalizer("a-a? a!") == "a-a? a"


def test_typographic_apostrophes(upper):
    for apostrophe in "’ʼ`´′＇":
        assert upper(f"don{apostrophe}t") == "DON'T"
    assert upper("‘quote") == "QUOTE"
    assert upper("a ' b ’ c") == "A B C"  # a stray quote mark is not a word


def test_nfkc_and_accent_folding(upper, lower):
    assert upper("ﬁne ＡＢＣ café") == "FINE ABC CAFE"
    french = TextNormalizer.from_vocab({"<pad>": 0, "|": 1, "c": 2, "a": 3, "f": 4, "é": 5})
    assert french("Café") == "café"
    assert french("cafe\u0301") == "café"  # decomposed input is composed by NFKC
    assert TextNormalizer.from_vocab(LOWER_VOCAB, fold_accents=False)("café") == "caf"


def test_oov_characters_counted_after_case_mapping_and_dropping(upper):
    assert upper.oov_characters("hello, WORLD") == Counter()
    assert upper.oov_characters("naïve ☃ x☃!") == Counter({"☃": 2})  # ï folds to I
    assert upper("x☃y") == "XY"
    assert TextNormalizer().oov_characters("☃") == Counter()


def test_digits_outside_vocabulary_are_removed_and_reported(upper):
    assert upper("room 101 is free") == "ROOM IS FREE"
    assert upper.oov_characters("room 101") == Counter({"1": 2, "0": 1})
    with_digits = TextNormalizer.from_vocab(LOWER_VOCAB | {"0": 29, "1": 30})
    assert with_digits("Room 101") == "room 101"


def test_bpe_like_vocabulary():
    vocab = {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "<0x41>": 3, "▁the": 4, "▁": 5, "c": 6}
    vocab |= {"##at": 7, "s": 8, "▁a": 9, "#": 10}
    normalizer = TextNormalizer.from_vocab(vocab)
    assert normalizer.vocabulary == frozenset("thecas#")
    assert normalizer("The CATS, #1!") == "the cats #"


def test_from_sentencepiece_style_tokenizer():
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "▁THE": 4, "▁": 5}
    vocab |= {c: i for i, c in enumerate("THECAS", start=6)}
    backend = Tokenizer(models.BPE(vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>"
    )
    normalizer = TextNormalizer.from_tokenizer(tokenizer)
    assert normalizer.vocabulary == frozenset("THECAS")
    assert normalizer("the cats.") == "THE CATS"


def test_invalid_configuration_raises_config_error():
    with pytest.raises(ConfigError, match="case"):
        TextNormalizer(case="title")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="single characters"):
        TextNormalizer(vocabulary=frozenset({"ab"}))


def test_frozen_hashable_and_picklable(upper):
    assert pickle.loads(pickle.dumps(upper)) == upper
    assert hash(upper) == hash(upper.replace())
    assert upper.replace(case="lower")("Hello") == ""


@pytest.mark.parametrize(
    "normalizer",
    [
        TextNormalizer(case="keep"),
        TextNormalizer(case="upper"),
        TextNormalizer(vocabulary=frozenset("abcdefghijklmnopqrstuvwxyz'"), case="lower"),
        TextNormalizer(case="keep", word_delimiter="<sp>"),
    ],
    ids=["keep", "upper", "vocabulary", "long-delimiter"],
)
def test_characters_are_those_of_every_normalized_text(normalizer):
    texts = [
        "Hello, World!",
        "rock/paper_scissors",
        "don't ' stop `til dawn",
        "ÉTÉ à Paris — Œuvre",
        "ﬁve ½ tabs\tand\nlines",
        "a|b <sp> c",
        "' '' `",
        "Straße",
    ]
    expected = set("".join(normalizer(t) for t in texts))
    assert normalizer.characters(texts) == expected
    assert normalizer.characters([]) == set()
