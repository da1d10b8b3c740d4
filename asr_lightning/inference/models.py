"""Loading a trained CTC model for inference, and the one forward pass every runtime shares.

A model comes as a Hugging Face folder (``save_pretrained`` layout, e.g. ``runs/.../hf_model``),
a hub id, or a Lightning checkpoint (``.ckpt``) of :class:`asr_lightning.training.module.CTCModule`.
:class:`CTCLogits` is the graph that is exported to ONNX and run by the torch backend, so both
runtimes compute the same thing: logits and the true number of output frames of each row.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.errors import ModelError
from asr_lightning.model.ctc import model_inputs, output_lengths
from asr_lightning.model.features import LEVEL_ATTRIBUTE
from asr_lightning.model.padding import guard_padding

log = logging.getLogger(__name__)

#: Suffix of Lightning checkpoints.
CHECKPOINT_SUFFIX = ".ckpt"
#: Prefix of the Hugging Face model's weights in a ``CTCModule`` checkpoint's state dict.
MODEL_PREFIX = "model."


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with the processor it reads its input through."""

    model: Any
    """The Hugging Face ``*ForCTC`` model, in eval mode on the CPU."""
    feature_extractor: Any
    """Its feature extractor (``Wav2Vec2FeatureExtractor``, ``ParakeetFeatureExtractor``...)."""
    tokenizer: Any
    """Its CTC tokenizer."""
    decoding: DecodingOptions | None = None
    """The decoding a checkpoint was trained with (``model.decoding``); ``None`` for folders,
    whose ``decoding.json`` the Transcriber reads."""


def load_model(path: str | Path) -> LoadedModel:
    """Load a Hugging Face model folder, hub id or ``CTCModule`` checkpoint for inference.

    Args:
        path: folder written by ``save_pretrained``/``CTCModule.save_hf``, a hub id, or a
            ``.ckpt`` file written by ``asr-lightning fit``.

    Raises:
        ModelError: the path holds no loadable CTC model.
    """
    if str(path).endswith(CHECKPOINT_SUFFIX):
        return _load_checkpoint(Path(path))
    from transformers import AutoModelForCTC, AutoTokenizer

    from asr_lightning.model.factory import load_feature_extractor

    try:
        model = AutoModelForCTC.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise ModelError(
            f"cannot load a CTC model from {path}: {err}\nGive a folder written by "
            "save_pretrained / asr-lightning fit (hf_model), a hub id, or a .ckpt checkpoint"
        ) from err
    guard_padding(model)
    return LoadedModel(model.eval(), load_feature_extractor(str(path)), tokenizer)


def _load_checkpoint(path: Path) -> LoadedModel:
    """The model of a ``fit`` checkpoint, rebuilt from its hyperparameters (no Lightning)."""
    from asr_lightning.model.factory import build_model, model_settings

    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        hparams = checkpoint["hyper_parameters"]
        state = {
            key.removeprefix(MODEL_PREFIX): value
            for key, value in checkpoint["state_dict"].items()
            if key.startswith(MODEL_PREFIX)
        }
    except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as err:
        raise ModelError(
            f"cannot load {path} as an asr-lightning checkpoint: {err}\nGive a .ckpt written by "
            "'asr-lightning fit' (or its hf_model folder)"
        ) from err
    model, feature_extractor, tokenizer = build_model(
        hparams.get("model_name_or_path"),
        hparams.get("model_type"),
        hparams.get("vocab"),
        model_settings(hparams),
        hparams.get("tokenizer_json"),
    )
    model.load_state_dict(state)
    setattr(feature_extractor, LEVEL_ATTRIBUTE, hparams.get("input_level", "none"))
    decoding = hparams.get("decoding")
    options = DecodingOptions(**decoding) if isinstance(decoding, dict) else None
    return LoadedModel(model.eval(), feature_extractor, tokenizer, options)


class CTCLogits(torch.nn.Module):
    """``(inputs, attention_mask) -> (logits, logit_lengths)`` of a Hugging Face CTC model.

    The attention mask is always an input: the model gets it under its family's name (see
    :func:`asr_lightning.model.ctc.model_inputs`), and it gives every row's true length, from
    which the output lengths follow (:func:`asr_lightning.model.ctc.output_lengths`).
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        guard_padding(model)

    def forward(
        self, inputs: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            inputs: ``(B, T)`` samples or ``(B, T, F)`` feature frames, zero-padded.
            attention_mask: ``(B, T)`` 1 on valid samples/frames, 0 on padding.

        Returns:
            ``logits`` ``(B, T', V)`` (blank id:
            :func:`~asr_lightning.model.families.blank_token_id`) and ``logit_lengths`` ``(B,)``
            int64.
        """
        logits = self.model(**model_inputs(self.model, inputs, attention_mask)).logits  # (B, T', V)
        batch = {"attention_mask": attention_mask, "input_lengths": attention_mask.sum(-1)}
        lengths = output_lengths(self.model, batch).to(torch.int64)
        return logits, torch.clamp(lengths, max=logits.shape[1])
