"""Word n-gram language models for beam search: our own ARPA reader, KenLM for binary files.

An ARPA file (what KenLM's ``lmplz``, SRILM and ``scripts/build_ngram.py`` write) is read into
two dictionaries, and scored with the standard back-off rule::

    log P(w | h) = log P*(h w)                      if h w was seen
                 = bow(h) + log P(w | h[1:])         otherwise

A KenLM binary file (``build_binary``) needs the optional ``kenlm`` package
(``pip install "asr-lightning[lm]"``, a source build). Scores are natural logarithms.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Protocol

from asr_lightning.errors import ConfigError

log = logging.getLogger(__name__)

LOG10 = math.log(10.0)
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
#: log10 probability of a word the model has never seen and that has no ``<unk>`` entry.
DEFAULT_UNK_LOG10 = -10.0
_SECTION = re.compile(r"^\\(\d+)-grams:$")


class LanguageModel(Protocol):
    """Scores the next word given the words before it (natural log)."""

    order: int

    def score(self, context: tuple[str, ...], word: str) -> float:
        """``ln P(word | context)``; ``context`` starts with ``<s>``, ``word`` may be ``</s>``."""
        ...


class ArpaLM:
    """An ARPA back-off n-gram model held in dictionaries (fine up to a few million n-grams)."""

    def __init__(
        self, probs: dict[tuple[str, ...], float], backoffs: dict[tuple[str, ...], float]
    ) -> None:
        """
        Args:
            probs: n-gram -> log10 probability.
            backoffs: n-gram -> log10 back-off weight (absent means 0).
        """
        if not probs:
            raise ConfigError("the language model holds no n-grams")
        self.probs = probs
        self.backoffs = backoffs
        self.order = max(len(ngram) for ngram in probs)
        self.unk_log10 = probs.get((UNK,), DEFAULT_UNK_LOG10)
        self._cache: dict[tuple[tuple[str, ...], str], float] = {}

    @classmethod
    def read(cls, path: str | Path) -> ArpaLM:
        """Read an ARPA file (plain text)."""
        probs: dict[tuple[str, ...], float] = {}
        backoffs: dict[tuple[str, ...], float] = {}
        order = 0
        with open(path, encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                    continue
                section = _SECTION.match(line)
                if section:
                    order = int(section.group(1))
                    continue
                fields = line.split()
                if order == 0 or len(fields) not in (order + 1, order + 2):
                    raise ConfigError(f"{path}:{lineno}: not an ARPA {order}-gram line: {line!r}")
                ngram = tuple(fields[1 : order + 1])
                probs[ngram] = float(fields[0])
                if len(fields) == order + 2:
                    backoffs[ngram] = float(fields[-1])
        log.info("read %d n-grams (order %d) from %s", len(probs), order, path)
        return cls(probs, backoffs)

    def score(self, context: tuple[str, ...], word: str) -> float:
        key = (context[-(self.order - 1) :] if self.order > 1 else (), word)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._log10(*key) * LOG10
        return cached

    def _log10(self, context: tuple[str, ...], word: str) -> float:
        backoff = 0.0
        for start in range(len(context) + 1):
            history = context[start:]
            prob = self.probs.get((*history, word))
            if prob is not None:
                return backoff + prob
            backoff += self.backoffs.get(history, 0.0) if history else 0.0
        return backoff + self.unk_log10


class KenLMModel:
    """A KenLM model (ARPA or binary) through the optional ``kenlm`` package."""

    def __init__(self, path: str | Path) -> None:
        try:
            import kenlm
        except ImportError as err:
            raise ConfigError(
                f"{path} is a binary KenLM model, which needs the kenlm package: "
                "pip install 'asr-lightning[lm]' (a C++ build), or give the ARPA file instead"
            ) from err
        self.model = kenlm.Model(str(path))
        self.order = self.model.order

    def score(self, context: tuple[str, ...], word: str) -> float:
        import kenlm

        state, out = kenlm.State(), kenlm.State()
        words = context[-(self.order - 1) :] if self.order > 1 else ()
        if words and words[0] == BOS:
            self.model.BeginSentenceWrite(state)
            words = words[1:]
        else:
            self.model.NullContextWrite(state)
        for previous in words:
            self.model.BaseScore(state, previous, out)
            state, out = out, state
        return self.model.BaseScore(state, word, out) * LOG10


def load_lm(path: str | Path) -> LanguageModel:
    """An ARPA file with our reader, anything else (a KenLM binary) with ``kenlm``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"language model {path} does not exist")
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.lstrip().startswith(b"\\data\\"):
        return ArpaLM.read(path)
    return KenLMModel(path)
