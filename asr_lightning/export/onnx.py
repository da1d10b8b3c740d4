"""Export a trained CTC model to ONNX, check it against PyTorch, optionally quantize it to INT8.

The ONNX folder is usable without the checkpoint: ``model.onnx`` (inputs ``inputs`` and
``attention_mask`` with dynamic batch and time axes; outputs ``logits`` and ``logit_lengths``),
the processor files (feature extractor, tokenizer, config) and ``asr_lightning.json`` with the
vocabulary, sampling rate and feature type.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. With torch 2.13 the
``dynamo=True`` exporter handles wav2vec2 but fails to decompose Parakeet's graph, while the
TorchScript exporter handles both with dynamic axes and matches PyTorch to ~1e-6.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from asr_lightning.artifacts import INT8_FILE, METADATA_FILE, ONNX_FILE
from asr_lightning.audio.decode import SAMPLE_RATE, AudioSource, load_audio
from asr_lightning.data.collate import WAVEFORM_INPUT
from asr_lightning.decoding.decoder import CTCDecoder
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions
from asr_lightning.decoding.package import resolve_decoding, save_decoding
from asr_lightning.errors import ConfigError, ModelError
from asr_lightning.inference.models import CTCLogits, LoadedModel, load_model
from asr_lightning.model.families import blank_token_id, padding_exact
from asr_lightning.model.features import (
    extract_features,
    feature_function,
    input_level,
    samples_per_frame,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 14
INPUT_NAMES = ("inputs", "attention_mask")
OUTPUT_NAMES = ("logits", "logit_lengths")
Quantization = Literal["int8"]
#: Op types INT8 dynamic quantization rewrites. MatMul (attention and feed-forward) carries
#: most of the compute of a transformer encoder; quantizing the convolutions too made the model
#: ~2x slower on CPU (onnxruntime's ConvInteger kernels; see BENCHMARKS.md).
QUANTIZED_OPS = ("MatMul",)
#: Lengths (seconds) of the synthetic clips used when no check audio is given.
_SYNTHETIC_CHECK_S = (1.7, 0.9)


@dataclass(frozen=True)
class ExportCheck:
    """How closely one ONNX file reproduces PyTorch on the check clips."""

    file: str
    """The ONNX file checked."""
    max_abs_logit_diff: float
    """Largest absolute logit difference over every valid frame of every clip."""
    same_transcripts: int
    """Clips whose transcript (decoded with the folder's decoding) is identical to PyTorch's."""
    clips: int
    """Clips checked."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how it compared with PyTorch."""

    output_dir: str
    checks: list[ExportCheck] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"ONNX model folder: {self.output_dir}"]
        for check in self.checks:
            lines.append(
                f"  {check.file}: max |logit diff| vs PyTorch {check.max_abs_logit_diff:.3g}, "
                f"identical transcripts {check.same_transcripts}/{check.clips}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(
    model_path: str | Path,
    output_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    quantize: Quantization | None = None,
    check_audio: Sequence[AudioSource] = (),
    decoding: DecodingOptions | None = None,
) -> ExportReport:
    """Export a model folder or checkpoint to an ONNX folder and check it against PyTorch.

    Args:
        model_path: Hugging Face model folder, hub id or ``CTCModule`` ``.ckpt``.
        output_dir: folder to write (created if missing).
        opset: ONNX opset version (>= 14).
        quantize: also write ``model.int8.onnx`` with INT8 dynamic quantization.
        check_audio: clips to compare PyTorch and ONNX on (real speech is best); synthetic
            tones when empty.
        decoding: decoding settings (and LM) for the folder to carry; ``None``: those of the
            model folder or checkpoint, if any.
    """
    check_opset(opset)
    loaded = load_model(model_path)
    decoding = decoding or loaded.decoding or resolve_decoding(model_path)
    return export_loaded(
        loaded, output_dir, opset, quantize, check_audio, str(model_path), decoding
    )


def export_loaded(
    loaded: LoadedModel,
    output_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    quantize: Quantization | None = None,
    check_audio: Sequence[AudioSource] = (),
    source: str = "",
    decoding: DecodingOptions = DEFAULT_DECODING,
) -> ExportReport:
    """:func:`export_onnx` of a model already in memory (the export callback's entry point)."""
    check_opset(opset)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_decoding(decoding, out)
    clips = [load_audio(clip) for clip in check_audio] or synthetic_clips()
    wrapper = CTCLogits(loaded.model).eval()
    _torch_export(wrapper, loaded, clips, out / ONNX_FILE, opset)
    save_processor(loaded, out, opset=opset, source=source)
    files = [ONNX_FILE]
    if quantize == "int8":
        quantize_int8(out / ONNX_FILE, out / INT8_FILE)
        files.append(INT8_FILE)
    report = ExportReport(output_dir=str(out))
    for name in files:
        report.checks.append(check_export(wrapper, loaded, out / name, clips, decoding))
    return report


def check_opset(opset: int) -> None:
    """Raises unless ``opset`` has what the exported graphs use."""
    if opset < MIN_OPSET:
        raise ConfigError(
            f"opset must be >= {MIN_OPSET} (scaled dot-product attention), got {opset}"
        )


def synthetic_clips() -> list[np.ndarray]:
    """Tone-and-noise clips of a few lengths, to trace and check a graph when no audio is given."""
    rng = np.random.default_rng(0)
    clips = []
    for seconds in _SYNTHETIC_CHECK_S:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        tones = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 440.0, 1250.0))
        clips.append((0.1 * tones + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def _torch_export(
    wrapper: CTCLogits, loaded: LoadedModel, clips: list[np.ndarray], path: Path, opset: int
) -> None:
    # Two clips of different lengths, so nothing batch- or length-specific is baked in.
    sample = extract_features(loaded.feature_extractor, clips[:2])
    args = (torch.from_numpy(sample["inputs"]), torch.from_numpy(sample["attention_mask"]))
    time_axes = {0: "batch", 1: "time"}
    # samples are the last axis of waveform inputs ((B, T), OmniASR's (B, 1, T)); frames are
    # axis 1 of filter-bank inputs (B, T, F)
    input_time = args[0].dim() - 1 if wrapper.model.main_input_name == WAVEFORM_INPUT else 1
    dynamic_axes = {
        "inputs": {0: "batch", input_time: "time"},
        "attention_mask": time_axes,
        "logits": {0: "batch", 1: "frames"},
        "logit_lengths": {0: "batch"},
    }
    trace_export(
        wrapper, args, path, INPUT_NAMES, OUTPUT_NAMES, dynamic_axes, opset,
        f"ONNX export of {type(loaded.model).__name__}",
    )  # fmt: skip


def trace_export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    what: str,
) -> None:
    """``torch.onnx.export`` (the TorchScript tracer) of ``module`` on ``args``, any failure a
    :class:`ModelError` that says ``what`` failed."""
    log.info("%s to %s (opset %s)", what, path, opset)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
        except Exception as err:  # the exporter raises many unrelated types
            raise ModelError(
                f"{what} failed: {err}\nTry another --opset, or report the model type"
            ) from err


def save_processor(loaded: LoadedModel, out: Path, opset: int, source: str) -> dict[str, Any]:
    """Write the feature extractor, tokenizer, config and ``asr_lightning.json`` into ``out``."""
    loaded.feature_extractor.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    loaded.model.config.save_pretrained(out)
    vocab = loaded.tokenizer.get_vocab()
    input_name = loaded.feature_extractor.model_input_names[0]
    metadata = {
        "format": 1,
        "source": source,
        "model_type": loaded.model.config.model_type,
        "opset": opset,
        "sampling_rate": int(getattr(loaded.feature_extractor, "sampling_rate", SAMPLE_RATE)),
        "model_input_name": input_name,
        "feature_type": "waveform" if input_name == "input_values" else "log-mel",
        "level": input_level(loaded.feature_extractor),
        "samples_per_frame": samples_per_frame(loaded.model, loaded.feature_extractor),
        "blank_id": blank_token_id(loaded.model.config),
        "padding_exact": padding_exact(loaded.model.config.model_type),
        "vocabulary": [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])],
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return metadata


def quantize_int8(source: Path, target: Path, op_types: Sequence[str] = QUANTIZED_OPS) -> Path:
    """INT8 dynamic quantization (weights int8, activations quantized on the fly).

    Args:
        source: the fp32 ONNX file.
        target: the file to write.
        op_types: ONNX op types to quantize (default: MatMul only).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types),
    )
    log.info("wrote INT8 model %s", target)
    return target


def check_export(
    wrapper: CTCLogits,
    loaded: LoadedModel,
    onnx_path: Path,
    clips: list[np.ndarray],
    decoding: DecodingOptions = DEFAULT_DECODING,
) -> ExportCheck:
    """Compare PyTorch and an ONNX file clip by clip: logits on valid frames, and transcripts
    decoded as every runtime decodes them (the same front end, the same decoding)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    featurize = feature_function(loaded.feature_extractor)
    decoder = CTCDecoder(
        loaded.tokenizer,
        blank_token_id(loaded.model.config),
        samples_per_frame(loaded.model, loaded.feature_extractor),
        decoding,
    )
    worst, same = 0.0, 0
    for clip in clips:
        features = featurize([clip])
        with torch.no_grad():
            ref, ref_len = wrapper(
                torch.from_numpy(features["inputs"]), torch.from_numpy(features["attention_mask"])
            )
        logits, lengths = session.run(list(OUTPUT_NAMES), features)  # keys = INPUT_NAMES
        valid = int(ref_len[0])
        if int(lengths[0]) != valid or logits.shape != tuple(ref.shape):
            raise ModelError(
                f"{onnx_path} gives {logits.shape} logits / {int(lengths[0])} valid frames where "
                f"PyTorch gives {tuple(ref.shape)} / {valid}: the export is broken"
            )
        diff = np.abs(logits[0, :valid] - ref[0, :valid].numpy())
        worst = max(worst, float(diff.max(initial=0.0)))
        same += decoder.texts(logits, lengths) == decoder.texts(ref, ref_len)
    return ExportCheck(onnx_path.name, worst, same, len(clips))
