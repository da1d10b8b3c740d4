"""One Transcriber for every runtime: audio in, text and word timestamps out.

``Transcriber.from_pretrained(path)`` reads a Hugging Face model folder, a ``.ckpt`` checkpoint
or an ONNX folder (``asr-lightning export``), and runs it on PyTorch or onnxruntime. Audio goes
through the same decoder chain as training data; a file that cannot be read becomes a
:class:`Transcript` with an ``error`` and never stops the others. Long files are cut into
overlapping windows (:mod:`asr_lightning.inference.chunking`), windows of all files are batched
by length, and each file's stitched logits are decoded greedily or by beam search with an
optional n-gram language model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from asr_lightning.artifacts import METADATA_FILE, ONNX_FILE
from asr_lightning.audio.augment import normalize_level
from asr_lightning.audio.decode import SAMPLE_RATE, AudioSource, load_audio
from asr_lightning.decoding.decoder import CTCDecoder, Word
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions
from asr_lightning.decoding.package import resolve_decoding
from asr_lightning.errors import AsrLightningError, ModelError
from asr_lightning.inference.backends import Backend, OnnxBackend, TorchBackend
from asr_lightning.inference.chunking import Chunk, ChunkOptions, plan_chunks, stitch
from asr_lightning.inference.models import load_model
from asr_lightning.model.families import blank_token_id, padding_exact
from asr_lightning.model.features import feature_function, input_level, samples_per_frame

log = logging.getLogger(__name__)

BackendName = Literal["auto", "torch", "onnx"]
#: Clips shorter than this (seconds) hold no speech to speak of: empty transcript, no model run.
MIN_AUDIO_S = 0.1
#: Files loaded at once, as a multiple of the batch size (bounds memory on long file lists).
FILES_PER_BATCH = 4
#: torch threads for feature extraction: a log-mel filter bank is too small to gain from more,
#: and OpenMP threads left spinning after it slow the model's own threads (in one profile, not
#: repeated, features on 2 torch threads made the int8 ONNX transcriber 2x slower).
FEATURE_THREADS = 1
#: Windows whose features are computed in a row before the model runs over them (see
#: ``Transcriber(features_ahead=...)``): at most ~60 MB of features (64 windows of 30 s).
FEATURES_AHEAD = 64
DEFAULT_CHUNKING = ChunkOptions()
#: Windows run through the model at once.
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Transcript:
    """The result for one input."""

    source: str
    """The file name (or ``<array N>`` for in-memory audio)."""
    text: str
    """The transcript; empty for silence or when ``error`` is set."""
    words: list[Word] = field(default_factory=list)
    """Per-word timestamps from the CTC alignment."""
    duration_s: float = 0.0
    """Length of the audio in seconds (0 when it could not be read)."""
    error: str | None = None
    """Why this input could not be transcribed, or ``None``."""
    confidence: float | None = None
    """The model's confidence in the transcript, in [0, 1] (``None`` when ``error`` is set;
    see :mod:`asr_lightning.decoding.confidence`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    source: str
    audio: np.ndarray | None
    chunks: list[Chunk] = field(default_factory=list)
    logits: list[np.ndarray | None] = field(default_factory=list)
    error: str | None = None


class Transcriber:
    """Batched, chunked CTC transcription on PyTorch or onnxruntime."""

    def __init__(
        self,
        backend: Backend,
        feature_extractor: Any,
        tokenizer: Any,
        samples_per_frame: int,
        blank_id: int,
        decoding: DecodingOptions = DEFAULT_DECODING,
        chunking: ChunkOptions = DEFAULT_CHUNKING,
        batch_size: int = DEFAULT_BATCH_SIZE,
        features_ahead: int = FEATURES_AHEAD,
    ) -> None:
        """
        Args:
            backend: the runtime (:class:`TorchBackend` or :class:`OnnxBackend`).
            feature_extractor: the model's Hugging Face feature extractor.
            tokenizer: the model's CTC tokenizer.
            samples_per_frame: audio samples per CTC output frame.
            blank_id: the CTC blank id.
            decoding: how logits become text (greedy, or beam search with an LM).
            chunking: how files longer than ``chunking.chunk_s`` are cut into windows.
            batch_size: windows run through the model at once.
            features_ahead: windows whose features are computed in a row (whole batches, at
                least one) before the model runs over them; it bounds the features held at
                once. 1 alternates features and model calls, which made int8 ONNX
                transcription ~1.2x slower at batch size 1 on a 2-core CPU (the "features
                between model calls" row of ``benchmarks/inference_speed.py``).
        """
        if batch_size < 1:
            raise ModelError(f"batch_size must be >= 1, got {batch_size}")
        if features_ahead < 1:
            raise ModelError(f"features_ahead must be >= 1, got {features_ahead}")
        self.backend = backend
        self.feature_extractor = feature_extractor
        self.featurize = feature_function(feature_extractor)
        self.level = input_level(feature_extractor)  # as training normalized every clip
        self.tokenizer = tokenizer
        self.samples_per_frame = samples_per_frame
        self.blank_id = blank_id
        self.chunking = chunking
        self.batch_size = batch_size
        self.features_ahead = features_ahead
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", SAMPLE_RATE))
        self.decoder = CTCDecoder(
            tokenizer, blank_id, samples_per_frame, decoding, sample_rate=self.sample_rate
        )

    @property
    def decoding(self) -> DecodingOptions:
        """How this transcriber decodes."""
        return self.decoder.options

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: BackendName = "auto",
        onnx_file: str = ONNX_FILE,
        num_threads: int | None = None,
        decoding: DecodingOptions | None = None,
        **kwargs: Any,
    ) -> Transcriber:
        """A transcriber for a model folder, checkpoint or ONNX folder.

        Args:
            path: Hugging Face folder or hub id, ``.ckpt`` checkpoint, or ONNX folder.
            backend: ``torch``, ``onnx``, or ``auto`` (onnx for ONNX folders, else torch).
            onnx_file: the ONNX file of the folder (``model.int8.onnx`` for the INT8 model).
            num_threads: onnxruntime intra-op threads (``None``: one per core).
            decoding: how to decode; ``None``: as the folder's ``decoding.json`` says (the LM
                that travels with the model), or a checkpoint's ``model.decoding``, else greedy.
            **kwargs: ``chunking``, ``batch_size``, ``features_ahead`` (see
                :class:`Transcriber`).
        """
        metadata_path = Path(path) / METADATA_FILE
        is_onnx = metadata_path.is_file()
        if backend == "auto":
            backend = "onnx" if is_onnx else "torch"
        if backend == "onnx":
            if not is_onnx:
                raise ModelError(
                    f"{path} is not an ONNX folder (no {METADATA_FILE}); run "
                    f"'asr-lightning export {path} --output DIR' and transcribe DIR"
                )
            decoding = decoding or resolve_decoding(path)
            return cls._from_onnx(Path(path), onnx_file, num_threads, decoding, **kwargs)
        if is_onnx and not (Path(path) / "model.safetensors").is_file():
            raise ModelError(f"{path} holds an ONNX model only: use --backend onnx")
        loaded = load_model(path)
        return cls(
            TorchBackend(loaded.model),
            loaded.feature_extractor,
            loaded.tokenizer,
            samples_per_frame(loaded.model, loaded.feature_extractor),
            blank_token_id(loaded.model.config),
            decoding or loaded.decoding or resolve_decoding(path),
            **_one_at_a_time(padding_exact(loaded.model.config.model_type), kwargs),
        )

    @classmethod
    def _from_onnx(
        cls,
        folder: Path,
        onnx_file: str,
        num_threads: int | None,
        decoding: DecodingOptions,
        **kwargs: Any,
    ) -> Transcriber:
        from transformers import AutoFeatureExtractor, AutoTokenizer

        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        return cls(
            OnnxBackend(folder / onnx_file, num_threads),
            AutoFeatureExtractor.from_pretrained(str(folder)),
            AutoTokenizer.from_pretrained(str(folder)),
            int(metadata["samples_per_frame"]),
            int(metadata["blank_id"]),
            decoding,
            **_one_at_a_time(metadata.get("padding_exact", True), kwargs),
        )

    # -- public API ---------------------------------------------------------------------------

    def transcribe(
        self, sources: Sequence[AudioSource], progress: bool = False
    ) -> list[Transcript]:
        """Transcripts of audio files (paths, bytes or file objects), in the order given.

        Args:
            sources: what :func:`asr_lightning.audio.decode.load_audio` reads.
            progress: show a progress bar over the files.
        """
        results: list[Transcript] = []
        group = self.batch_size * FILES_PER_BATCH
        bar = _progress(len(sources), progress)
        for first in range(0, len(sources), group):
            items = [self._load(source) for source in sources[first : first + group]]
            results.extend(self._run(items))
            bar.update(len(items))
        bar.close()
        return results

    def transcribe_arrays(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcripts of float32 mono clips already at the model's sampling rate."""
        items = [
            _Item(f"<array {i}>", np.asarray(a, dtype=np.float32)) for i, a in enumerate(audios)
        ]
        return self._run(items)

    # -- steps ----------------------------------------------------------------------------------

    def _load(self, source: AudioSource) -> _Item:
        name = str(source) if isinstance(source, (str, Path)) else f"<{type(source).__name__}>"
        try:
            return _Item(name, load_audio(source, sample_rate=self.sample_rate))
        except AsrLightningError as err:
            log.warning("cannot transcribe %s: %s", name, err)
            return _Item(name, None, error=str(err))

    def _run(self, items: list[_Item]) -> list[Transcript]:
        segments = []  # (item, chunk index) of every window of every readable clip
        for item in items:
            if item.audio is None or item.audio.size < MIN_AUDIO_S * self.sample_rate:
                continue
            item.audio = normalize_level(item.audio, self.level)
            item.chunks = plan_chunks(
                item.audio.size, self.samples_per_frame, self.chunking, self.sample_rate
            )
            item.logits = [None] * len(item.chunks)
            segments += [(item, index) for index in range(len(item.chunks))]
        segments.sort(key=lambda s: s[0].chunks[s[1]].end - s[0].chunks[s[1]].start, reverse=True)
        batches = [
            segments[first : first + self.batch_size]
            for first in range(0, len(segments), self.batch_size)
        ]
        per_group = max(1, self.features_ahead // self.batch_size)
        for first in range(0, len(batches), per_group):
            group = batches[first : first + per_group]
            with torch_threads(FEATURE_THREADS):
                features = [self._features(batch) for batch in group]
            for batch, batch_features in zip(group, features, strict=True):
                self._forward(batch, batch_features)
        return [self._finish(item) for item in items]

    def _features(self, segments: list[tuple[_Item, int]]) -> dict[str, np.ndarray] | None:
        """Model input of a batch of windows; ``None`` if it fails (``_forward`` then retries)."""
        try:
            return self.featurize(_windows(segments))
        except Exception:  # _forward retries window by window and names the one that fails
            return None

    def _forward(
        self, segments: list[tuple[_Item, int]], features: dict[str, np.ndarray] | None = None
    ) -> None:
        """Logits of a batch of windows; a failing batch is retried one window at a time."""
        try:
            if features is None:
                with torch_threads(FEATURE_THREADS):
                    features = self.featurize(_windows(segments))
            logits, lengths = self.backend(features["inputs"], features["attention_mask"])
        except Exception as err:  # a runtime error in one row must not lose the others
            if len(segments) == 1:
                item = segments[0][0]
                item.error = f"inference failed: {type(err).__name__}: {err}"
                log.warning("cannot transcribe %s: %s", item.source, item.error)
                return
            for segment in segments:
                self._forward([segment])
            return
        for row, (item, index) in enumerate(segments):
            item.logits[index] = logits[row, : int(lengths[row])]  # (T_i, V) valid frames

    def _finish(self, item: _Item) -> Transcript:
        duration = 0.0 if item.audio is None else round(item.audio.size / self.sample_rate, 3)
        if item.error is not None:
            return Transcript(item.source, "", [], duration, item.error)
        if not item.chunks:  # too short to hold speech: surely nothing said
            return Transcript(item.source, "", [], duration, confidence=1.0)
        decoded = self.decoder.decode(stitch(item.chunks, item.logits))  # (T, V) logits
        return Transcript(
            item.source, decoded.text, decoded.words, duration, confidence=decoded.confidence
        )


def _one_at_a_time(exact: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``batch_size`` 1 for a family whose padding changes valid frames."""
    if exact:
        return kwargs
    log.warning("this model family is not padding-exact: transcribing one window at a time")
    return {**kwargs, "batch_size": 1}


def _windows(segments: list[tuple[_Item, int]]) -> list[np.ndarray]:
    """The audio of each ``(item, chunk index)`` window."""
    return [item.audio[item.chunks[i].start : item.chunks[i].end] for item, i in segments]


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(min(count, previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="transcribing")
