"""Loading a trained CTC model for inference, and the one forward pass every runtime shares.

A model comes as a Hugging Face folder (``save_pretrained`` layout, e.g. ``runs/.../hf_model``),
a hub id, or a Lightning checkpoint (``.ckpt``) of :class:`asr_lightning.model.module.CTCModule`.
:class:`CTCLogits` is the graph that is exported to ONNX and run by the torch backend, so both
runtimes compute the same thing: logits and the true number of output frames of each row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_lightning.audio.augment import LEVEL_MODES, LevelMode
from asr_lightning.audio.decode import SAMPLE_RATE
from asr_lightning.data.collate import WAVEFORM_INPUT
from asr_lightning.errors import ModelError
from asr_lightning.model.ctc import model_inputs, output_lengths
from asr_lightning.model.padding import guard_padding

log = logging.getLogger(__name__)

#: Suffix of Lightning checkpoints.
CHECKPOINT_SUFFIX = ".ckpt"
#: Two audio lengths (seconds) whose output frame counts give the frame rate exactly.
_RATE_PROBE_S = (10, 20)
#: Feature extractor attribute (saved in ``preprocessor_config.json``) naming the level
#: normalization training applied before the features (``data.level``), so inference applies it.
LEVEL_ATTRIBUTE = "asr_lightning_level"


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with the processor it reads its input through."""

    model: Any
    """The Hugging Face ``*ForCTC`` model, in eval mode on the CPU."""
    feature_extractor: Any
    """Its feature extractor (``Wav2Vec2FeatureExtractor``, ``ParakeetFeatureExtractor``...)."""
    tokenizer: Any
    """Its CTC tokenizer."""


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
    from asr_lightning.model.module import CTCModule

    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        module = CTCModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, KeyError) as err:
        raise ModelError(
            f"cannot load {path} as an asr-lightning checkpoint: {err}\nGive a .ckpt written by "
            "'asr-lightning fit' (or its hf_model folder)"
        ) from err
    return LoadedModel(module.model.eval(), module.feature_extractor, module.tokenizer)


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


def extract_features(feature_extractor: Any, audios: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Padded model input and attention mask of a batch of 16 kHz clips, as numpy arrays.

    The same call as the training collator, so inference sees what training saw.

    Returns:
        ``{"inputs": (B, T), (B, 1, T) or (B, T, F) float32, "attention_mask": (B, T) int64}``.
    """
    name = feature_extractor.model_input_names[0]
    features = feature_extractor(
        audios,
        sampling_rate=SAMPLE_RATE,
        padding=True,
        return_attention_mask=True,
        return_tensors="pt",  # OmniASR's extractor supports no other
    )
    inputs = features[name].to(torch.float32).numpy()
    if name == WAVEFORM_INPUT:  # (B, [1,] T) samples: the mask follows the true sample counts
        lengths = np.array([len(audio) for audio in audios])
        mask = (np.arange(inputs.shape[-1])[None, :] < lengths[:, None]).astype(np.int64)
    else:
        mask = features["attention_mask"].to(torch.int64).numpy()
    return {"inputs": inputs, "attention_mask": mask}


def input_level(feature_extractor: Any) -> LevelMode:
    """The level normalization a model was trained with (``"none"`` for other models)."""
    level = getattr(feature_extractor, LEVEL_ATTRIBUTE, "none")
    if level not in LEVEL_MODES:
        raise ModelError(
            f"the feature extractor's {LEVEL_ATTRIBUTE} is {level!r}, not one of {LEVEL_MODES}: "
            "fix preprocessor_config.json"
        )
    return level


def samples_per_frame(model: Any, feature_extractor: Any) -> int:
    """Audio samples per CTC output frame (320 for wav2vec2, hop x subsampling for Parakeet).

    Measured from the output lengths of two silent inputs, so it holds for any family whose
    lengths :func:`asr_lightning.model.ctc.output_lengths` knows, without running the model.
    """
    frames = []
    for seconds in _RATE_PROBE_S:
        features = extract_features(feature_extractor, [np.zeros(seconds * SAMPLE_RATE, "f4")])
        mask = torch.from_numpy(features["attention_mask"])
        batch = {"attention_mask": mask, "input_lengths": mask.sum(-1)}
        frames.append(int(output_lengths(model, batch)[0]))
    extra_samples = (_RATE_PROBE_S[1] - _RATE_PROBE_S[0]) * SAMPLE_RATE
    return round(extra_samples / (frames[1] - frames[0]))
