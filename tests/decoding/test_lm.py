"""ARPA reading and back-off scoring; Kneser-Ney models that are proper distributions."""

from __future__ import annotations

import math

import pytest

from asr_lightning.decoding.lm import BOS, EOS, LOG10, ArpaLM, load_lm
from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.errors import ConfigError

ARPA = """
\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-1.0\t</s>
-99\t<s>\t-0.5
-0.5\tyes\t-0.25
-0.8\tno

\\2-grams:
-0.1\t<s> yes
-0.2\tyes </s>

\\end\\
"""


def test_backoff_scoring_follows_the_arpa_rule(tmp_path):
    path = tmp_path / "tiny.arpa"
    path.write_text(ARPA)
    lm = load_lm(path)
    assert isinstance(lm, ArpaLM) and lm.order == 2
    assert lm.score((BOS,), "yes") == pytest.approx(-0.1 * LOG10)  # seen bigram
    assert lm.score((BOS,), "no") == pytest.approx((-0.5 - 0.8) * LOG10)  # bow(<s>) + P(no)
    assert lm.score(("no",), "yes") == pytest.approx(-0.5 * LOG10)  # no bow for "no"
    assert lm.score((BOS, "yes"), EOS) == pytest.approx(-0.2 * LOG10)
    assert lm.score((BOS,), "maybe") == pytest.approx((-0.5 - 10.0) * LOG10)  # unknown word


@pytest.mark.parametrize("order", [1, 2, 3])
def test_kneser_ney_distributions_sum_to_one(tmp_path, order):
    texts = ["go left", "go right now", "stop", "go left now", "left left right"]
    path = write_arpa(tmp_path / "kn.arpa", *kneser_ney(texts, order))
    lm = load_lm(path)
    words = [w for (w,) in (k for k in lm.probs if len(k) == 1) if w != BOS]
    for context in [(BOS,), (BOS, "go"), ("go", "left"), ("never", "seen")]:
        total = sum(math.exp(lm.score(context, word)) for word in words)
        assert total == pytest.approx(1.0, abs=1e-5)
    assert lm.score((BOS,), "go") > lm.score((BOS,), "now")  # "go" starts sentences


def test_bad_models_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_lm(tmp_path / "missing.arpa")
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0 a b c d\n")
    with pytest.raises(ConfigError, match="broken.arpa:5"):
        load_lm(broken)
    with pytest.raises(ConfigError, match="no words"):
        kneser_ney(["", "  "])
