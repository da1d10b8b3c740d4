"""How CTC logits become text: one frozen set of options for every runtime.

``fit``/``validate``/``test`` take them as ``--decoding.*`` (or ``--model.decoding.*``),
``transcribe`` and ``serve`` as ``--decoding.*``; a model folder may carry them with its LM
(:mod:`asr_lightning.decoding.package`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asr_lightning.errors import ConfigError

DecodingMethod = Literal["auto", "greedy", "beam"]


@dataclass(frozen=True)
class DecodingOptions:
    """How CTC logits become text, the same in every runtime.

    Args:
        method: ``greedy`` (best path), ``beam`` (CTC prefix beam search), or ``auto``: beam
            search when an LM is given, greedy otherwise.
        beam_width: Prefixes the beam search keeps after each frame.
        lm: Word n-gram language model for beam search (shallow fusion): an ARPA file, or a
            KenLM binary (needs the ``kenlm`` package). ``None``: no LM.
        alpha: Weight of the LM's log-probability (natural log).
        beta: Bonus per word, offsetting the LM's preference for short transcripts.
        token_min_logp: Tokens less likely than this (natural log) at a frame are not tried.
        beam_prune_logp: Prefixes scoring this much below the best one are dropped.
    """

    method: DecodingMethod = "auto"
    beam_width: int = 32
    lm: str | None = None
    alpha: float = 0.5
    beta: float = 1.0
    token_min_logp: float = -5.0
    beam_prune_logp: float = -10.0

    def __post_init__(self) -> None:
        if self.method not in ("auto", "greedy", "beam"):
            raise ConfigError(f"decoding.method must be auto, greedy or beam, got {self.method!r}")
        if self.beam_width < 1:
            raise ConfigError(f"decoding.beam_width must be >= 1, got {self.beam_width}")
        if self.method == "greedy" and self.lm:
            raise ConfigError(
                "decoding.lm needs beam search: set decoding.method to beam (or auto), or drop "
                "decoding.lm for greedy decoding"
            )

    @property
    def beam(self) -> bool:
        """Whether these options decode by beam search."""
        return self.method == "beam" or (self.method == "auto" and bool(self.lm))

    def describe(self) -> str:
        """``greedy`` or ``beam 32 + LM an4.arpa (alpha 0.5, beta 1.0)``, for logs and reports."""
        if not self.beam:
            return "greedy"
        lm = f" + LM {Path(self.lm).name} (alpha {self.alpha}, beta {self.beta})" if self.lm else ""
        return f"beam {self.beam_width}{lm}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Greedy decoding, the default everywhere.
DEFAULT_DECODING = DecodingOptions()
