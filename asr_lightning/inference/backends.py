"""The two runtimes a :class:`~asr_lightning.inference.transcriber.Transcriber` can run on.

Both take the padded model input and attention mask of a batch (numpy, from
:func:`asr_lightning.model.features.extract_features`) and return numpy logits ``(B, T, V)``
and true output lengths ``(B,)``: PyTorch eager runs :class:`CTCLogits` around the Hugging Face
model, onnxruntime runs its export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from asr_lightning.errors import ModelError
from asr_lightning.inference.models import CTCLogits


class Backend(Protocol):
    """``(inputs, attention_mask) -> (logits (B, T, V) float32, lengths (B,) int64)``."""

    name: str

    def __call__(
        self, inputs: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBackend:
    """PyTorch eager inference of a Hugging Face CTC model on the CPU."""

    name = "torch"

    def __init__(self, model: Any) -> None:
        """
        Args:
            model: a Hugging Face ``*ForCTC`` model (put in eval mode here).
        """
        self.module = CTCLogits(model).eval()

    def __call__(
        self, inputs: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, lengths = self.module(
                torch.from_numpy(inputs), torch.from_numpy(attention_mask)
            )
        return logits.float().numpy(), lengths.numpy()


class OnnxBackend:
    """onnxruntime inference of a model written by :func:`asr_lightning.export.onnx.export_onnx`."""

    name = "onnx"

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        """
        Args:
            path: the ``.onnx`` file.
            num_threads: intra-op threads (``None``: onnxruntime's default, one per core).
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(
                f"onnxruntime cannot load {path}: {err}\nExport it with 'asr-lightning export'"
            ) from err
        self.path = Path(path)

    def __call__(
        self, inputs: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        logits, lengths = self.session.run(
            ["logits", "logit_lengths"], {"inputs": inputs, "attention_mask": attention_mask}
        )
        return logits, lengths
