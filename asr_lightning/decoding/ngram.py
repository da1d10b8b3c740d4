"""Build a word n-gram model (interpolated Kneser-Ney) from transcripts and write it as ARPA.

Small corpora only (everything is held in Counters), which is what a domain LM from a training
set's own transcripts is. For corpora of millions of sentences use KenLM's ``lmplz``: its ARPA
output loads the same way.

Kneser-Ney, interpolated, with one absolute discount per order ``D = n1 / (n1 + 2 n2)`` (n1,
n2: n-grams seen once and twice). The highest order uses raw counts, the lower ones
continuation counts (how many distinct words precede an n-gram), except n-grams that start
with ``<s>``, which nothing precedes. The ARPA back-off weight of a context ``h`` is the
interpolation weight ``D * N1+(h .) / c(h)``, so back-off scoring reproduces the interpolated
probabilities exactly.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from asr_lightning.decoding.lm import BOS, EOS, UNK
from asr_lightning.errors import ConfigError

#: log10 probability written for ``<s>``, which is never predicted.
BOS_LOG10 = -99.0
_DISCOUNT_RANGE = (0.1, 0.9)


def _discount(counts: Counter) -> float:
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    value = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
    return min(max(value, _DISCOUNT_RANGE[0]), _DISCOUNT_RANGE[1])


def _counts(sentences: list[list[str]], order: int) -> list[Counter]:
    """Counts per order (index n-1): raw for the highest order, continuation below."""
    raw = [Counter() for _ in range(order)]
    for words in sentences:
        padded = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                raw[n - 1][tuple(padded[i : i + n])] += 1
    counts = [Counter() for _ in range(order)]
    counts[-1] = raw[-1]
    for n in range(1, order):
        for ngram in raw[n]:  # each distinct (n+1)-gram adds one left context to its suffix
            counts[n - 1][ngram[1:]] += 1
        for ngram, count in raw[n - 1].items():
            if ngram[0] == BOS:
                counts[n - 1][ngram] = count
    return counts


def kneser_ney(
    sentences: Iterable[str], order: int = 3
) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """log10 probabilities and back-off weights of an interpolated Kneser-Ney model.

    Args:
        sentences: one transcript per item, words separated by spaces, already normalized.
        order: n-gram order (>= 1).
    """
    if order < 1:
        raise ConfigError(f"order must be >= 1, got {order}")
    corpus = [text.split() for text in sentences if text.split()]
    if not corpus:
        raise ConfigError("no words to build a language model from")
    counts = _counts(corpus, order)
    vocab = {ngram[0] for ngram in counts[0]} | {UNK}
    vocab.discard(BOS)
    probs: dict[tuple[str, ...], float] = {}
    backoffs: dict[tuple[str, ...], float] = {}
    lower: dict[tuple[str, ...], float] = {}  # interpolated probabilities of the order below
    for n in range(1, order + 1):
        table = Counter({ng: c for ng, c in counts[n - 1].items() if ng[-1] != BOS})
        discount = _discount(table)
        totals: dict[tuple[str, ...], float] = defaultdict(float)
        types: dict[tuple[str, ...], int] = defaultdict(int)
        for ngram, count in table.items():
            totals[ngram[:-1]] += count
            types[ngram[:-1]] += 1
        current = {}
        for ngram, count in table.items():
            history = ngram[:-1]
            weight = discount * types[history] / totals[history]
            below = lower[ngram[1:]] if n > 1 else 1.0 / len(vocab)
            current[ngram] = max(count - discount, 0.0) / totals[history] + weight * below
        if n == 1:
            uniform = discount * types[()] / totals[()] / len(vocab)
            current.update({(word,): uniform for word in vocab if (word,) not in current})
        for history in totals:
            if history:
                backoffs[history] = math.log10(discount * types[history] / totals[history])
        probs.update({ngram: math.log10(p) for ngram, p in current.items() if ngram != (BOS,)})
        lower = current
    probs[(BOS,)] = BOS_LOG10
    return probs, backoffs


def write_arpa(
    path: str | Path, probs: dict[tuple[str, ...], float], backoffs: dict[tuple[str, ...], float]
) -> Path:
    """Write an ARPA file that KenLM, SRILM and :class:`~asr_lightning.decoding.lm.ArpaLM` read."""
    order = max(len(ngram) for ngram in probs)
    by_order = [sorted(ng for ng in probs if len(ng) == n) for n in range(1, order + 1)]
    lines = ["", "\\data\\"]
    lines += [f"ngram {n}={len(grams)}" for n, grams in enumerate(by_order, 1)]
    for n, grams in enumerate(by_order, 1):
        lines += ["", f"\\{n}-grams:"]
        for ngram in grams:
            line = f"{probs[ngram]:.6f}\t{' '.join(ngram)}"
            if n < order and ngram in backoffs:
                line += f"\t{backoffs[ngram]:.6f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
