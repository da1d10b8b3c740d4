"""The model a server or SageMaker handler serves: a model dir as training leaves it, or a folder.

A SageMaker model dir (``asr_lightning/sagemaker/model_dir.py``) holds ``onnx/`` and
``hf_model/``; the ONNX folder is preferred (no PyTorch weights to load, faster on CPU) unless
the torch backend is asked for. Any folder or checkpoint ``Transcriber.from_pretrained`` reads
is served as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from asr_lightning.artifacts import HF_SUBDIR, METADATA_FILE, ONNX_FILE, ONNX_SUBDIR
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.inference.chunking import ChunkOptions
from asr_lightning.inference.transcriber import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHUNKING,
    BackendName,
    Transcriber,
)

log = logging.getLogger(__name__)

#: Where SageMaker unpacks ``model.tar.gz`` in an inference container.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"


def resolve_model(path: str | Path, backend: BackendName = "auto") -> str:
    """The folder to load from ``path``: its ``onnx/`` or ``hf_model/`` when it is a model dir.

    Args:
        path: a SageMaker model dir, an HF or ONNX folder, a ``.ckpt`` file or a hub id.
        backend: ``torch`` skips ``onnx/``; ``onnx`` and ``auto`` prefer it.
    """
    folder = Path(path)
    onnx = folder / ONNX_SUBDIR
    if backend != "torch" and (onnx / METADATA_FILE).is_file():
        return str(onnx)
    if (folder / HF_SUBDIR / "config.json").is_file():
        return str(folder / HF_SUBDIR)
    return str(path)


def load_transcriber(
    path: str | Path,
    backend: BackendName = "auto",
    onnx_file: str = ONNX_FILE,
    num_threads: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decoding: DecodingOptions | None = None,
    chunking: ChunkOptions = DEFAULT_CHUNKING,
) -> Transcriber:
    """The Transcriber of a model dir or folder (see :func:`resolve_model`).

    Args:
        path: a SageMaker model dir, an HF or ONNX folder, a ``.ckpt`` file or a hub id.
        backend: ``auto``, ``torch`` or ``onnx``.
        onnx_file: the ONNX file of an ONNX folder (``model.int8.onnx`` for INT8).
        num_threads: onnxruntime intra-op threads (``None``: one per core).
        batch_size: windows per forward pass (at least the server's max batch size).
        decoding: how to decode; ``None``: as the model folder says (its LM), else greedy.
        chunking: how long audio is cut into windows.
    """
    model = resolve_model(path, backend)
    log.info("loading %s (backend %s)", model, backend)
    return Transcriber.from_pretrained(
        model,
        backend=backend,
        onnx_file=onnx_file,
        num_threads=num_threads,
        batch_size=batch_size,
        decoding=decoding,
        chunking=chunking,
    )
