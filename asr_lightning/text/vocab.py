"""CTC character vocabularies: build one from transcripts, wrap it in a tokenizer, encode labels.

The layout follows the Hugging Face CTC recipe: ``<pad>`` is id 0 and doubles as the CTC blank
(``model.config.pad_token_id`` is the blank), ``<unk>`` is 1, the word delimiter ``|`` stands for
a space and is 2, then every character seen in the training transcripts in code-point order.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from asr_lightning.errors import VocabularyError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, Wav2Vec2CTCTokenizer

logger = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
WORD_DELIMITER = "|"
#: SentencePiece marks a word start with this; it is not a character of the text.
SENTENCEPIECE_SPACE = "▁"
#: WordPiece marks a word continuation with this prefix.
WORDPIECE_PREFIX = "##"
VOCAB_FILENAME = "vocab.json"
#: Tokens such as <pad>, </s>, <0x41>, [PAD], [CLS]: never characters of the text.
_SPECIAL_TOKEN = re.compile(r"^(<[^<>\s]+>|\[[^\[\]\s]+\])$")

VocabCase = Literal["upper", "lower", "mixed", "none"]


def is_special_token(token: str) -> bool:
    """Whether ``token`` looks like a special token (``<...>`` or ``[...]``), not text.

    Args:
        token: one entry of a tokenizer vocabulary.
    """
    return bool(_SPECIAL_TOKEN.match(token))


def vocab_characters(
    tokens: Iterable[str],
    word_delimiter: str | None = WORD_DELIMITER,
    special_tokens: Iterable[str] = (),
) -> frozenset[str]:
    """The characters a vocabulary can spell, without special tokens and word markers.

    Works for character vocabularies (each token one character) and for BPE / SentencePiece /
    WordPiece ones (the characters inside the tokens, with ``▁`` and a leading ``##`` removed).

    Args:
        tokens: the vocabulary's tokens (a ``token -> id`` mapping iterates over its tokens).
        word_delimiter: the token that stands for a space; it is not a character of the text.
        special_tokens: further tokens to leave out, e.g. ``tokenizer.all_special_tokens``.
    """
    skip = set(special_tokens) | {word_delimiter, SENTENCEPIECE_SPACE}
    characters: set[str] = set()
    for token in tokens:
        if token in skip or is_special_token(token):
            continue
        if token.startswith(WORDPIECE_PREFIX) and len(token) > len(WORDPIECE_PREFIX):
            token = token[len(WORDPIECE_PREFIX) :]
        characters.update(token.replace(SENTENCEPIECE_SPACE, ""))
    return frozenset(c for c in characters if not c.isspace())


def vocab_case(tokens: Iterable[str], word_delimiter: str | None = WORD_DELIMITER) -> VocabCase:
    """Which letter case a vocabulary spells in.

    ``"upper"`` (e.g. facebook/wav2vec2-base-960h) or ``"lower"`` when all its cased letters share
    one case, ``"mixed"`` when both occur, ``"none"`` when it has no cased letters (digits only,
    Chinese characters, ...).

    Args:
        tokens: the vocabulary's tokens.
        word_delimiter: the token that stands for a space.
    """
    characters = vocab_characters(tokens, word_delimiter)
    has_upper = any(c.isupper() for c in characters)
    has_lower = any(c.islower() for c in characters)
    if has_upper and has_lower:
        return "mixed"
    if has_upper:
        return "upper"
    if has_lower:
        return "lower"
    return "none"


def build_vocab(transcripts: Iterable[str], word_delimiter: str = WORD_DELIMITER) -> dict[str, int]:
    """Build a CTC character vocabulary from the TRAINING transcripts.

    Build it from the training split only: a character seen only in validation or test data
    could never be learned, and letting it in would leak those splits into the model.

    Args:
        transcripts: normalized transcripts (see
            :class:`~asr_lightning.text.normalize.TextNormalizer`), words separated by spaces.
        word_delimiter: the token that stands for a space.

    Returns:
        ``{"<pad>": 0, "<unk>": 1, word_delimiter: 2}`` followed by the characters in code-point
        order, so the same transcripts always give the same ids.
    """
    characters: set[str] = set()
    for text in transcripts:
        characters.update(text)
    characters = {c for c in characters if not c.isspace()}
    if word_delimiter in characters:
        raise VocabularyError(
            f"the word delimiter {word_delimiter!r} occurs in the transcripts; normalize them "
            "first (TextNormalizer turns it into a space) or choose another word_delimiter"
        )
    if not characters:
        raise VocabularyError(
            "the training transcripts contain no characters to build a vocabulary from; "
            "check that the training split has non-empty transcripts"
        )
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1, word_delimiter: 2}
    for character in sorted(characters):
        vocab[character] = len(vocab)
    logger.info(
        "built a vocabulary of %s characters: %s", len(characters), "".join(sorted(characters))
    )
    return vocab


def _check_vocab(vocab: Mapping[str, int], word_delimiter: str) -> None:
    missing = [token for token in (PAD_TOKEN, UNK_TOKEN, word_delimiter) if token not in vocab]
    if missing:
        raise VocabularyError(
            f"the vocabulary lacks {missing}; build it with build_vocab() or add these tokens"
        )
    ids = sorted(vocab.values())
    if ids != list(range(len(vocab))):
        raise VocabularyError(
            f"vocabulary ids must be 0..{len(vocab) - 1}, each used once, but are {ids}; "
            "build it with build_vocab()"
        )


def make_tokenizer(
    vocab: Mapping[str, int],
    word_delimiter: str = WORD_DELIMITER,
    directory: str | Path | None = None,
) -> Wav2Vec2CTCTokenizer:
    """Wrap a character vocabulary in a :class:`transformers.Wav2Vec2CTCTokenizer`.

    Args:
        vocab: ``token -> id`` with ``<pad>``, ``<unk>`` and the word delimiter, ids 0..n-1.
        word_delimiter: the token that stands for a space.
        directory: where to write ``vocab.json`` (kept, e.g. next to a checkpoint); by default a
            temporary folder that is removed once the tokenizer has read it.
    """
    from transformers import Wav2Vec2CTCTokenizer

    _check_vocab(vocab, word_delimiter)
    special = {
        "unk_token": UNK_TOKEN,
        "pad_token": PAD_TOKEN,
        # The HF recipe's vocabularies have no sentence markers: CTC labels need none.
        "bos_token": BOS_TOKEN if BOS_TOKEN in vocab else None,
        "eos_token": EOS_TOKEN if EOS_TOKEN in vocab else None,
        "word_delimiter_token": word_delimiter,
        "do_lower_case": False,
    }
    if directory is not None:
        path = Path(directory) / VOCAB_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(vocab), ensure_ascii=False, indent=1), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(path), **special)
    with tempfile.TemporaryDirectory(prefix="asr_lightning_vocab_") as tmp:
        path = Path(tmp) / VOCAB_FILENAME
        path.write_text(json.dumps(dict(vocab), ensure_ascii=False), encoding="utf-8")
        return Wav2Vec2CTCTokenizer(str(path), **special)


class LabelEncoder:
    """Turns normalized text into CTC label ids, exactly as the tokenizer would.

    For a character-level CTC tokenizer (every non-special token one character, with a word
    delimiter) it looks characters up in a dict: a space becomes the delimiter id and an unknown
    character the ``<unk>`` id. That is an order of magnitude faster than the tokenizer and gives
    the same ids. Any other tokenizer (BPE, SentencePiece) encodes through
    ``tokenizer(text, add_special_tokens=False)``: CTC labels carry no BOS/EOS/CLS markers.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """
        Args:
            tokenizer: the tokenizer whose ids the model predicts.
        """
        self.tokenizer = tokenizer
        vocab: dict[str, int] = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens)
        delimiter = getattr(tokenizer, "word_delimiter_token", None)
        text_tokens = [t for t in vocab if t not in special and not is_special_token(t)]
        self.is_char_level = (
            delimiter in vocab
            and tokenizer.unk_token in vocab
            and all(len(t) == 1 for t in text_tokens)
        )
        self._ids = dict(vocab)
        if self.is_char_level:
            self._ids[" "] = vocab[delimiter]
            self._unk_id = vocab[tokenizer.unk_token]
        # Strings the tokenizer matches as whole tokens before splitting into characters.
        self._multi_char_tokens = tuple(t for t in vocab if len(t) > 1)
        self._has_multi_char = re.compile(
            "|".join(map(re.escape, sorted(self._multi_char_tokens, key=len, reverse=True)))
            or r"(?!x)x"  # matches nothing
        ).search
        self._upper = bool(getattr(tokenizer, "do_lower_case", False))

    def __call__(self, text: str) -> list[int]:
        """The label ids of ``text`` (a normalized transcript)."""
        if not self.is_char_level or self._has_multi_char(text):
            return list(self.tokenizer(text, add_special_tokens=False).input_ids)
        if self._upper:
            # Wav2Vec2CTCTokenizer(do_lower_case=True) upper-cases the text, despite its name.
            text = text.upper()
        ids, unk = self._ids, self._unk_id
        return [ids.get(c, unk) for c in text]

    def count(self, text: str) -> int | list[int]:
        """The number of labels of ``text`` when it is one label per character (a character
        vocabulary), else the labels themselves: what CTC feasibility needs, without encoding."""
        if self.is_char_level and not self._has_multi_char(text):
            return len(text)
        return self(text)
