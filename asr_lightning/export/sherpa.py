"""Export a Parakeet-style CTC model for sherpa-onnx's offline NeMo CTC recognizer.

``asr-lightning export MODEL --output DIR --format sherpa-onnx`` writes ``DIR/model.onnx`` and
``DIR/tokens.txt``, which ``sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model, tokens,
feature_dim=...)`` loads as it loads NVIDIA's NeMo CTC exports. What sherpa-onnx expects, read
from its source (sherpa-onnx 1.13.4, ``offline-nemo-enc-dec-ctc-model.cc``,
``offline-recognizer-ctc-impl.h``, ``offline-stream.cc``, ``features.h``):

- the graph's first input is the features ``(N, C, T)`` (sherpa-onnx transposes its ``(T, C)``
  frames), the second their lengths ``(N,)`` int64 in frames; only the first output is read,
  as ``(N, T', V)`` scores (greedy search: their argmax), and sherpa-onnx takes ``T' = T //
  subsampling_factor`` frames of it, whatever the graph says;
- metadata ``model_type`` (``EncDecCTCModel``/``EncDecCTCModelBPE``), ``vocab_size``,
  ``subsampling_factor`` and ``normalize_type`` (``per_feature``: sherpa-onnx normalises each
  mel bin over the utterance, as the model's own front end does);
- ``tokens.txt``: ``symbol id`` per line, the blank written ``<blk>``; ``▁`` becomes a space,
  so the word delimiter ``|`` of character vocabularies is written ``▁``;
- its own front end (kaldi-native-fbank): 25 ms Hann windows (periodic) every 10 ms, FFT
  size 512, pre-emphasis 0.97 applied per frame, librosa (Slaney) mel filters from 0 Hz to
  Nyquist, ``log(max(e, FLT_EPSILON))``, frames centred on ``10 ms * t + 5 ms`` with reflected
  edges and ``round(samples / 160)`` of them, no dither.

That front end is close to ``ParakeetFeatureExtractor``'s (centred symmetric Hann windows,
pre-emphasis over the whole clip, ``log(e + 2**-24)``, zero-padded edges, ``samples // 160``
valid frames) but not equal: the same graph fed by the two gives nearly, not exactly, the same
transcripts (``tests/export/test_sherpa.py`` measures and bounds the difference). Only models
whose feature extractor is a ``ParakeetFeatureExtractor`` with the frame layout above can be
exported. Waveform models (the wav2vec2 family) read samples, which sherpa-onnx's NeMo CTC
recognizer cannot give, and w2v-BERT's Kaldi filter bank (povey window, 2-frame stacking) is
not the one sherpa-onnx computes for NeMo models: both are refused; ``--format onnx`` serves
them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_lightning.artifacts import ONNX_FILE
from asr_lightning.audio.decode import SAMPLE_RATE, AudioSource, load_audio
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.errors import ModelError
from asr_lightning.export.onnx import DEFAULT_OPSET, check_opset, synthetic_clips, trace_export
from asr_lightning.inference.models import CTCLogits, LoadedModel, load_model
from asr_lightning.model.families import blank_token_id
from asr_lightning.model.features import (
    LogMelFrontEnd,
    has_log_mel_front_end,
    input_level,
    samples_per_frame,
)
from asr_lightning.text.vocab import SENTENCEPIECE_SPACE

log = logging.getLogger(__name__)

#: The symbol table sherpa-onnx reads next to ``model.onnx``.
TOKENS_FILE = "tokens.txt"
#: sherpa-onnx's greedy search takes the id of this symbol as the blank.
BLANK_SYMBOL = "<blk>"
#: Input and output names of NeMo's CTC exports (sherpa-onnx reads them by position).
SHERPA_INPUT_NAMES = ("audio_signal", "length")
SHERPA_OUTPUT_NAMES = ("logprobs",)
#: sherpa-onnx's per-utterance, per-mel-bin mean and variance normalisation.
NORMALIZE_TYPE = "per_feature"
#: ``ParakeetFeatureExtractor`` settings sherpa-onnx's NeMo front end reproduces: 16 kHz,
#: 10 ms hop, 25 ms window, FFT size 512 (the window rounded up to a power of two) and
#: pre-emphasis 0.97 (kaldi-native-fbank's default, which sherpa-onnx keeps for NeMo models).
SHERPA_FRONT_END = {
    "sampling_rate": SAMPLE_RATE,
    "hop_length": 160,
    "win_length": 400,
    "n_fft": 512,
    "preemphasis": 0.97,
}


@dataclass(frozen=True)
class SherpaReport:
    """What :func:`export_sherpa` wrote, and how its graph compares with PyTorch."""

    output_dir: str
    feature_dim: int
    """Mel bins: ``from_nemo_ctc(..., feature_dim=...)`` must be given this."""
    vocab_size: int
    subsampling_factor: int
    max_abs_logprob_diff: float
    """Largest log-probability difference between the ONNX graph and PyTorch over the valid
    frames of the check clips, both fed asr-lightning's features (the graph alone: sherpa-onnx's
    own front end is another matter)."""
    clips: int

    def render(self) -> str:
        return (
            f"sherpa-onnx model folder: {self.output_dir} ({ONNX_FILE}, {TOKENS_FILE})\n"
            f"  feature_dim {self.feature_dim}, vocab_size {self.vocab_size}, "
            f"subsampling_factor {self.subsampling_factor}\n"
            f"  {ONNX_FILE}: max |log-prob diff| vs PyTorch {self.max_abs_logprob_diff:.3g} "
            f"on {self.clips} clips (same features)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NemoCTCGraph(torch.nn.Module):
    """``(audio_signal (N, C, T), length (N,)) -> logprobs (N, T', V)``: NeMo's CTC signature
    around :class:`~asr_lightning.inference.models.CTCLogits`."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.ctc = CTCLogits(model)

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        features = audio_signal.transpose(1, 2)  # (N, T, C), as the Hugging Face model reads
        logits, _ = self.ctc(features, self.mask(audio_signal, length))  # (N, T', V)
        return torch.log_softmax(logits, dim=-1)

    @staticmethod
    def mask(audio_signal: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` int64 attention mask: 1 on the first ``length`` frames of each row."""
        frames = torch.arange(audio_signal.shape[2], device=length.device)
        return (frames[None, :] < length[:, None]).to(torch.int64)


def export_sherpa(
    model_path: str | Path,
    output_dir: str | Path,
    opset: int = DEFAULT_OPSET,
    check_audio: Sequence[AudioSource] = (),
    decoding: DecodingOptions | None = None,
) -> SherpaReport:
    """Export a model folder or checkpoint to a sherpa-onnx NeMo CTC folder.

    Args:
        model_path: Hugging Face model folder, hub id or ``CTCModule`` ``.ckpt``.
        output_dir: folder to write ``model.onnx`` and ``tokens.txt`` into (created if missing).
        opset: ONNX opset version (>= 14).
        check_audio: clips to compare the graph with PyTorch on; synthetic tones when empty.
        decoding: the model's decoding settings, only to warn that sherpa-onnx decodes
            greedily; ``None``: those of the checkpoint, if any.

    Raises:
        ModelError: the model's input is not a filter bank sherpa-onnx computes.
    """
    check_opset(opset)
    loaded = load_model(model_path)
    check_compatible(loaded, str(model_path))
    decoding = decoding or loaded.decoding
    if decoding is not None and decoding.method != "greedy":
        log.warning(
            "%s decodes with %s search, but sherpa-onnx's NeMo CTC recognizer decodes greedily "
            "(an LM does not travel with the sherpa-onnx folder)",
            model_path,
            decoding.method,
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = [load_audio(clip) for clip in check_audio] or synthetic_clips()
    graph = NemoCTCGraph(loaded.model).eval()
    front_end = LogMelFrontEnd(loaded.feature_extractor)
    _torch_export(graph, front_end(clips[:2]), out / ONNX_FILE, opset)
    metadata = sherpa_metadata(loaded)
    add_metadata(out / ONNX_FILE, metadata)
    lines = token_lines(loaded.tokenizer, blank_token_id(loaded.model.config))
    (out / TOKENS_FILE).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return SherpaReport(
        output_dir=str(out),
        feature_dim=int(loaded.feature_extractor.feature_size),
        vocab_size=int(metadata["vocab_size"]),
        subsampling_factor=int(metadata["subsampling_factor"]),
        max_abs_logprob_diff=check_graph(graph, front_end, out / ONNX_FILE, clips),
        clips=len(clips),
    )


def check_compatible(loaded: LoadedModel, source: str = "the model") -> None:
    """Raise unless sherpa-onnx's NeMo front end computes this model's input.

    Raises:
        ModelError: a waveform model, another filter bank than Parakeet's, other frame
            settings.
    """
    extractor = loaded.feature_extractor
    name = type(extractor).__name__
    if loaded.model.main_input_name == "input_values":
        raise ModelError(
            f"{source} is a {loaded.model.config.model_type} model, which reads raw samples: "
            "sherpa-onnx's NeMo CTC recognizer feeds the graph log-mel filter-bank frames, not "
            "samples. Export it with --format onnx (asr-lightning's ONNX folder) instead"
        )
    if not has_log_mel_front_end(extractor):
        raise ModelError(
            f"{source} reads {name} features, not the NeMo-style log-mel frames "
            "(ParakeetFeatureExtractor) sherpa-onnx computes for NeMo CTC models (librosa mel "
            "filters, Hann windows, per-utterance normalisation). Export it with --format onnx "
            "instead"
        )
    settings = {key: getattr(extractor, key, None) for key in SHERPA_FRONT_END}
    different = {k: v for k, v in settings.items() if v != SHERPA_FRONT_END[k]}
    if different:
        raise ModelError(
            f"{source}'s feature extractor has {different}, but sherpa-onnx's NeMo front end "
            f"computes {SHERPA_FRONT_END}: export it with --format onnx instead"
        )
    level = input_level(extractor)
    if level != "none":
        log.warning(
            "%s was trained with '%s' level normalization, which sherpa-onnx does not apply. "
            "Per-feature normalization cancels a constant gain except where mel energies reach "
            "the log floor; for the exact input, scale each clip as "
            "asr_lightning.audio.augment.normalize_level(audio, '%s') does before "
            "accept_waveform",
            source,
            level,
            level,
        )


def sherpa_metadata(loaded: LoadedModel) -> dict[str, str]:
    """The ``model.onnx`` metadata sherpa-onnx's NeMo CTC model reads (all values strings)."""
    hop = SHERPA_FRONT_END["hop_length"]
    subsampling = samples_per_frame(loaded.model, loaded.feature_extractor) // hop
    vocab = loaded.tokenizer.get_vocab()
    bpe = any(token.startswith(SENTENCEPIECE_SPACE) and len(token) > 1 for token in vocab)
    return {
        "model_type": "EncDecCTCModelBPE" if bpe else "EncDecCTCModel",
        "vocab_size": str(loaded.model.config.vocab_size),
        "subsampling_factor": str(subsampling),
        "normalize_type": NORMALIZE_TYPE,
        # not read by sherpa-onnx: what from_nemo_ctc(feature_dim=...) must be given
        "feature_dim": str(int(loaded.feature_extractor.feature_size)),
        "model_author": "asr-lightning",
        "hf_model_type": str(loaded.model.config.model_type),
    }


def token_lines(tokenizer: Any, blank_id: int) -> list[str]:
    """``tokens.txt`` lines (``symbol id``) of a CTC tokenizer, in id order.

    The blank becomes ``<blk>`` (sherpa-onnx's greedy search looks its id up by that name), the
    word delimiter (``|``) becomes ``▁``, which sherpa-onnx turns into a space.

    Raises:
        ModelError: a token sherpa-onnx cannot read back (one with whitespace inside).
    """
    vocab = tokenizer.get_vocab()
    delimiter = getattr(tokenizer, "word_delimiter_token", None)
    lines = []
    for token, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        if index == blank_id:
            token = BLANK_SYMBOL
        elif token == delimiter or token == " ":
            token = SENTENCEPIECE_SPACE
        elif token == BLANK_SYMBOL or any(c.isspace() for c in token) or not token:
            raise ModelError(
                f"token {token!r} (id {index}) cannot be written to {TOKENS_FILE}: sherpa-onnx "
                f"reads 'symbol id' lines and takes {BLANK_SYMBOL} as the blank. Rename it in "
                "the tokenizer's vocab.json, or export with --format onnx"
            )
        lines.append(f"{token} {index}")
    return lines


def add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set ``model.onnx``'s custom metadata (``metadata_props``) in place."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def check_graph(
    graph: NemoCTCGraph, front_end: LogMelFrontEnd, onnx_path: Path, clips: list[np.ndarray]
) -> float:
    """Largest log-probability difference between the ONNX graph and PyTorch, clip by clip,
    both fed asr-lightning's features in sherpa-onnx's layout.

    Raises:
        ModelError: the graph gives another number of frames than PyTorch.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for clip in clips:
        audio_signal, length = nemo_inputs(front_end([clip]))
        inputs = (torch.from_numpy(audio_signal), torch.from_numpy(length))
        with torch.no_grad():
            ref = graph(*inputs)[0].numpy()  # (T', V)
            _, valid = graph.ctc(inputs[0].transpose(1, 2), graph.mask(*inputs))
        feed = dict(zip(SHERPA_INPUT_NAMES, (audio_signal, length), strict=True))
        (got,) = session.run(list(SHERPA_OUTPUT_NAMES), feed)
        if got.shape[1:] != ref.shape:
            raise ModelError(
                f"{onnx_path} gives {got.shape[1:]} log-probs where PyTorch gives {ref.shape}: "
                "the export is broken"
            )
        frames = int(valid[0])
        worst = max(worst, float(np.abs(got[0, :frames] - ref[:frames]).max(initial=0.0)))
    return worst


def nemo_inputs(features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(audio_signal (N, C, T) float32, length (N,) int64)`` of ``{"inputs", "attention_mask"}``
    features: sherpa-onnx's layout of the same frames."""
    audio_signal = np.ascontiguousarray(features["inputs"].transpose(0, 2, 1))
    return audio_signal, features["attention_mask"].sum(-1).astype(np.int64)


def _torch_export(
    graph: NemoCTCGraph, features: dict[str, np.ndarray], path: Path, opset: int
) -> None:
    # Two clips of different lengths, so nothing batch- or length-specific is baked in.
    args = tuple(torch.from_numpy(a) for a in nemo_inputs(features))
    dynamic_axes = {
        "audio_signal": {0: "batch", 2: "time"},
        "length": {0: "batch"},
        "logprobs": {0: "batch", 1: "frames"},
    }
    trace_export(
        graph, args, path, SHERPA_INPUT_NAMES, SHERPA_OUTPUT_NAMES, dynamic_axes, opset,
        f"sherpa-onnx export of {type(graph.ctc.model).__name__}",
    )  # fmt: skip
