"""Where things are in the folders asr-lightning writes: one place for every file-layout name.

A model travels as a Hugging Face folder (``hf_model/``), an ONNX folder and a SageMaker model
dir (``model.tar.gz``) holding both; every layer that writes or reads them takes the names from
here, so no layer imports a higher one for a file name.
"""

from __future__ import annotations

#: The Hugging Face model folder ``fit`` writes next to its logs, and its place in a model dir.
HF_SUBDIR = "hf_model"
#: The ONNX folder's place in a SageMaker model dir.
ONNX_SUBDIR = "onnx"
#: The handler code's place in a SageMaker model dir.
CODE_SUBDIR = "code"
#: The ONNX folder the ``ONNXExport`` callback writes next to the logs.
ONNX_FOLDER = "onnx_model"
#: The ONNX graph, and its INT8-quantized twin, in an ONNX folder.
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: What an ONNX folder says about its model (vocabulary, blank, feature type, frame rate...).
METADATA_FILE = "asr_lightning.json"
#: The decoding settings a model folder carries (``DecodingOptions`` as JSON, LM path relative).
DECODING_FILE = "decoding.json"
#: The language model's place in a model folder (HF and ONNX folders alike).
LM_SUBDIR = "language_model"
#: The checkpoint averaging the best (or last) checkpoints of a run, and its HF folder.
AVERAGED_CHECKPOINT = "averaged.ckpt"
AVERAGED_HF_SUBDIR = "hf_model_averaged"
