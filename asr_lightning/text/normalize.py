"""Transcript normalization that fits the text to what a CTC vocabulary can spell.

The steps, in order: typographic apostrophes to ``'``; Unicode NFKC; case mapping (derived from
the vocabulary: an upper-case one such as facebook/wav2vec2-base-960h's upper-cases, a lower-case
one lower-cases, a mixed one keeps case); word separators and the word delimiter to spaces;
punctuation dropped; accents folded (``é`` -> ``e``) where only the plain letter is in the
vocabulary; every other character outside the vocabulary removed; whitespace collapsed.

Numbers are not spelled out: with a vocabulary that has no digits, ``"room 101"`` becomes
``"room"`` and the digits are reported by :meth:`TextNormalizer.oov_characters`. Spell numbers
in the transcripts beforehand if the model should learn them.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from asr_lightning.errors import ConfigError
from asr_lightning.text.vocab import WORD_DELIMITER, vocab_case, vocab_characters

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Case = Literal["auto", "upper", "lower", "keep"]
CASES: tuple[Case, ...] = ("auto", "upper", "lower", "keep")

#: Punctuation removed from transcripts: the Hugging Face CTC recipe's ``chars_to_ignore``
#: plus other quotes, brackets and marks that carry no sound.
DEFAULT_DROP = ',?.!-;:"“%‘”�' + "«»„‟‚‹›()[]{}¿¡*"
#: Characters that separate words without spaces around them ("rock/paper", "now—then").
DEFAULT_SEPARATORS = "—–‒―/_\\"
#: Typographic apostrophes and look-alikes written for the apostrophe ``'``.
#: (The left quote ‘ is in DEFAULT_DROP instead: it opens a quotation.)
APOSTROPHES = "’ʼ`´′"
APOSTROPHE = "'"


def _fold_accent(character: str) -> str:
    """``é`` -> ``e``: the character without its combining marks (NFKD), maybe empty."""
    decomposed = unicodedata.normalize("NFKD", character)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


class _KeepTable(dict[int, int | None]):
    """A ``str.translate`` table keeping vocabulary characters and whitespace, dropping the
    rest; filled as characters are met, so translating runs in C after the first texts."""

    def __init__(self, vocabulary: frozenset[str]) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def __missing__(self, code: int) -> int | None:
        character = chr(code)
        kept = code if character in self.vocabulary or character.isspace() else None
        self[code] = kept
        return kept


@dataclass(frozen=True)
class TextNormalizer:
    """Normalizes transcripts to the characters of a CTC vocabulary; words joined by one space.

    Build it from the model's tokenizer (:meth:`from_tokenizer`) or vocabulary
    (:meth:`from_vocab`), or with ``vocabulary=None`` to clean transcripts before a vocabulary
    exists (then nothing is removed as out-of-vocabulary).
    """

    vocabulary: frozenset[str] | None = None
    """Characters the text may keep (no special tokens, no word delimiter); None keeps all."""
    case: Case = "auto"
    """Letter case of the output; "auto" follows the vocabulary (keep when there is none)."""
    drop_characters: str = DEFAULT_DROP
    """Punctuation removed silently, unless the vocabulary spells it (then it is kept)."""
    word_delimiter: str = WORD_DELIMITER
    """The vocabulary token standing for a space; in text it separates words like a space."""
    word_separators: str = DEFAULT_SEPARATORS
    """Characters turned into a space, so "rock/paper" gives two words."""
    fold_accents: bool = True
    """Write "é" as "e" when the vocabulary has "e" but not "é"."""

    _apostrophes: dict[int, str] = field(init=False, repr=False, compare=False)
    _table: dict[int, str | None] = field(init=False, repr=False, compare=False)
    _keep: _KeepTable = field(init=False, repr=False, compare=False)
    _resolved_case: Literal["upper", "lower", "keep"] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.case not in CASES:
            raise ConfigError(f"case must be one of {CASES}, got {self.case!r}")
        if not self.word_delimiter:
            raise ConfigError("word_delimiter must be a non-empty string, e.g. '|'")
        if self.vocabulary is not None:
            long = sorted(t for t in self.vocabulary if len(t) != 1)
            if long:
                raise ConfigError(
                    f"vocabulary must hold single characters, got {long[:5]}; build the "
                    "normalizer with TextNormalizer.from_vocab() or from_tokenizer()"
                )
            chars = frozenset(c for c in self.vocabulary if not c.isspace()) - {self.word_delimiter}
            object.__setattr__(self, "vocabulary", chars)
        object.__setattr__(self, "_resolved_case", self._resolve_case())
        spelled = self.vocabulary or frozenset()
        apostrophes = {ord(c): APOSTROPHE for c in APOSTROPHES if c not in spelled}
        object.__setattr__(self, "_apostrophes", apostrophes)
        object.__setattr__(self, "_table", self._make_table())
        object.__setattr__(self, "_keep", _KeepTable(self.vocabulary or frozenset()))

    @classmethod
    def from_vocab(
        cls, vocab: Mapping[str, int], word_delimiter: str = WORD_DELIMITER, **kwargs: Any
    ) -> TextNormalizer:
        """A normalizer for a ``token -> id`` vocabulary (characters, or BPE/SentencePiece tokens).

        Special tokens (``<pad>``, ``[PAD]``, anything ``<...>`` or ``[...]``), the word
        delimiter and ``▁`` are not characters of the text.

        Args:
            vocab: the tokenizer vocabulary, e.g. the content of ``vocab.json``.
            word_delimiter: the token that stands for a space.
            **kwargs: further fields of :class:`TextNormalizer` (``case``, ``drop_characters``...).
        """
        characters = vocab_characters(vocab, word_delimiter)
        return cls(vocabulary=characters, word_delimiter=word_delimiter, **kwargs)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> TextNormalizer:
        """A normalizer for a Hugging Face tokenizer (Wav2Vec2CTCTokenizer, BPE, SentencePiece).

        Args:
            tokenizer: the tokenizer whose vocabulary the model predicts.
            **kwargs: further fields of :class:`TextNormalizer` (``case``, ``drop_characters``...).
        """
        delimiter = getattr(tokenizer, "word_delimiter_token", None) or WORD_DELIMITER
        characters = vocab_characters(
            tokenizer.get_vocab(), delimiter, special_tokens=tokenizer.all_special_tokens
        )
        return cls(vocabulary=characters, word_delimiter=delimiter, **kwargs)

    def replace(self, **changes: Any) -> TextNormalizer:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def _resolve_case(self) -> Literal["upper", "lower", "keep"]:
        if self.case != "auto":
            return self.case
        if self.vocabulary is None:
            return "keep"
        found = vocab_case(self.vocabulary, self.word_delimiter)
        return found if found in ("upper", "lower") else "keep"

    def _make_table(self) -> dict[int, str | None]:
        """One ``str.translate`` table for separators and dropped punctuation."""
        spelled = self.vocabulary or frozenset()
        table: dict[int, str | None] = {
            ord(c): None for c in self.drop_characters if c not in spelled
        }
        table.update({ord(c): " " for c in self.word_separators if c not in spelled})
        if len(self.word_delimiter) == 1:
            table[ord(self.word_delimiter)] = " "
        return table

    def _prepare(self, text: str) -> str:
        """Everything but removing out-of-vocabulary characters."""
        # Before NFKC, which turns the acute accent ´ into a space and a combining mark.
        text = text.translate(self._apostrophes)
        if not text.isascii():  # NFKC leaves ASCII as it is
            text = unicodedata.normalize("NFKC", text)
        if self._resolved_case == "upper":
            text = text.upper()
        elif self._resolved_case == "lower":
            text = text.lower()
        if len(self.word_delimiter) > 1:
            text = text.replace(self.word_delimiter, " ")
        text = text.translate(self._table)
        if self.fold_accents and self.vocabulary is not None and not text.isascii():
            text = "".join(self._fold(c) for c in text)
        return text

    def _fold(self, character: str) -> str:
        if character in self.vocabulary or character.isspace() or character.isascii():
            return character
        folded = _fold_accent(character)
        if folded and all(c in self.vocabulary for c in folded):
            return folded
        return character

    def __call__(self, text: str) -> str:
        """The normalized text: vocabulary characters only, words separated by single spaces."""
        text = self._prepare(text)
        if self.vocabulary is not None:
            text = text.translate(self._keep)
        if APOSTROPHE not in text:
            return " ".join(text.split())
        # A lone apostrophe (a stray quote mark) is not a word.
        return " ".join(w for w in text.split() if w.strip(APOSTROPHE))

    def characters(self, texts: Iterable[str]) -> set[str]:
        """The characters of the normalized ``texts``, as a vocabulary built from them needs.

        Exact, and cheaper than normalizing every text: an ASCII text without apostrophes is
        normalized character by character (case, dropped punctuation, separators), so the
        characters of all such texts are pooled and normalized once; other texts one by one.
        """
        pooled: set[str] = set()
        found: set[str] = set()
        per_character = len(self.word_delimiter) == 1
        for text in texts:
            if per_character and text.isascii() and APOSTROPHE not in text and "`" not in text:
                pooled.update(text)
            else:
                found.update(self(text))
        if pooled:
            found.update(self(" ".join(sorted(pooled))))
        return found

    def oov_characters(self, text: str) -> Counter[str]:
        """Characters of ``text`` that the vocabulary cannot spell, with their counts.

        Counted after case mapping and dropping punctuation, so it lists what
        :meth:`__call__` removes: report these to spot a vocabulary that does not fit the data
        (digits, letters of another alphabet, stray symbols). Empty without a vocabulary.
        """
        if self.vocabulary is None:
            return Counter()
        spelled = self.vocabulary
        return Counter(c for c in self._prepare(text) if c not in spelled and not c.isspace())
