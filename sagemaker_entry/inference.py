"""SageMaker inference handler: the PyTorch inference container's four functions.

Training copies this file to ``code/inference.py`` of the model dir, next to a copy of the
``asr_lightning`` package (``asr_lightning/sagemaker/model_dir.py``). The container (through
the SageMaker inference toolkit) calls ``model_fn`` once, then per request ``input_fn`` ->
``predict_fn`` -> ``output_fn``. Parsing and answers come from :mod:`asr_lightning.serve.requests`,
the code ``asr-lightning serve`` runs, so the endpoint and a local server answer alike; the model
is the project's ``Transcriber`` (``onnx/`` preferred over ``hf_model/``).

Bad input raises the toolkit's ``GenericInferenceToolkitError`` with a 4xx status and the JSON
error as its message (without the toolkit, the :class:`RequestError` itself). Environment:
``ASR_LIGHTNING_BACKEND`` (``auto``/``torch``/``onnx``), ``ASR_LIGHTNING_ONNX_FILE``
(``model.int8.onnx`` for the INT8 model), ``ASR_LIGHTNING_THREADS`` (onnxruntime threads).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
# code/ of a model dir holds asr_lightning/; in the source tree it is one level up
for _root in (HERE, HERE.parent):
    if (_root / "asr_lightning").is_dir() and str(_root) not in sys.path:
        sys.path.insert(0, str(_root))

from asr_lightning.audio.decode import SAMPLE_RATE, resample  # noqa: E402
from asr_lightning.serve import requests as rq  # noqa: E402
from asr_lightning.serve.loading import load_transcriber  # noqa: E402

BACKEND_ENV = "ASR_LIGHTNING_BACKEND"
ONNX_FILE_ENV = "ASR_LIGHTNING_ONNX_FILE"
THREADS_ENV = "ASR_LIGHTNING_THREADS"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def model_fn(model_dir: str) -> Any:
    """The Transcriber of the unpacked ``model.tar.gz``."""
    threads = os.environ.get(THREADS_ENV)
    return load_transcriber(
        model_dir,
        backend=os.environ.get(BACKEND_ENV, "auto"),  # type: ignore[arg-type]
        onnx_file=os.environ.get(ONNX_FILE_ENV, "model.onnx"),
        num_threads=int(threads) if threads else None,
    )


def input_fn(request_body: bytes | str, request_content_type: str, context: Any = None) -> Any:
    """A :class:`~asr_lightning.serve.requests.ParsedRequest` (16 kHz samples), or a 4xx."""
    try:
        return rq.parse_request(
            request_body,
            request_content_type,
            SAMPLE_RATE,
            timestamps=rq.wants_timestamps(_custom_attributes(context)),
        )
    except rq.RequestError as err:
        _fail(err)


def predict_fn(data: Any, model: Any) -> dict[str, Any]:
    """The answer body: ``{"text": ...}`` (+ ``words``, ``duration_s`` when asked)."""
    audio = data.audio
    if model.sample_rate != SAMPLE_RATE:
        audio = resample(audio, SAMPLE_RATE, model.sample_rate)
    transcript = model.transcribe_arrays([audio])[0]
    try:
        return rq.transcript_body(transcript, data.timestamps)
    except rq.RequestError as err:
        _fail(err)


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[bytes, str]:
    """JSON bytes and their content type (406 unless JSON is acceptable)."""
    try:
        rq.check_accept(accept)
    except rq.RequestError as err:
        _fail(err)
    return rq.encode_json(prediction), rq.JSON_TYPE


def _custom_attributes(context: Any) -> str | None:
    """SageMaker's custom attributes header, from the toolkit's request context if any."""
    if context is None:
        return None
    try:  # header names keep the client's spelling: match them case-insensitively
        headers = context.get_all_request_header(0) or {}
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    wanted = CUSTOM_ATTRIBUTES.lower()
    return next((v for k, v in headers.items() if str(k).lower() == wanted), None)


def _fail(err: rq.RequestError) -> NoReturn:
    """Re-raises as the toolkit's error, whose status the container answers with."""
    try:
        from sagemaker_inference.errors import GenericInferenceToolkitError
    except ImportError:
        raise err from None
    message = rq.encode_json(err.to_dict()).decode("utf-8")
    raise GenericInferenceToolkitError(err.status, message) from err
