"""Turn a path, bytes or a binary file object into float32 mono samples at one sample rate.

Decoders ("backends") are tried in a configured order, like lhotse's composite backend, and when
every one fails a single :class:`~asr_lightning.errors.AudioDecodeError` lists each one's reason:

- ``soundfile`` (libsndfile): WAV, FLAC, OGG Vorbis, Opus, MP3, NIST SPHERE, in process. It
  reads in blocks (a FLAC streamed to a pipe claims 2**63 - 1 frames) and gives up on an MP3
  that libsndfile stops decoding at its length estimate (a VBR MP3 without a Xing frame).
- ``ffmpeg``: the command line tool in a subprocess (an argument list, never a shell) for what
  libsndfile cannot read: M4A/AAC, WMA, shorten-compressed SPHERE, video containers.
- ``librosa``: libsndfile again, without those two guards, then audioread where installed.
- ``torchaudio``: only when importable; it is an optional extra.

Once a backend has decoded a file its content is final: no samples raise
:class:`~asr_lightning.errors.EmptyAudioError` and NaN/inf samples raise
:class:`~asr_lightning.errors.NonFiniteAudioError` without trying other backends, since that is
a property of the file, not of the decoder.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import BinaryIO, Literal, get_args

import numpy as np
import soundfile as sf
import soxr

from asr_lightning.errors import (
    AudioDecodeError,
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
)

log = logging.getLogger(__name__)
# librosa's fallback to audioread warns; a file no backend reads is reported by our own error
warnings.filterwarnings("ignore", "PySoundFile failed. Trying audioread instead", UserWarning)
warnings.filterwarnings("ignore", r"librosa\.core\.audio\.__audioread_load", FutureWarning)

#: Sample rate every model in asr-lightning consumes, in Hz.
SAMPLE_RATE = 16_000
Backend = Literal["soundfile", "ffmpeg", "librosa", "torchaudio"]
DEFAULT_BACKENDS: tuple[Backend, ...] = ("soundfile", "ffmpeg", "librosa", "torchaudio")
#: A path, encoded bytes, or a binary file object (read to its end).
AudioSource = str | os.PathLike | bytes | BinaryIO

#: soxr quality preset for :func:`resample`.
RESAMPLE_QUALITY = "HQ"
#: Seconds an ffmpeg decode may take before it is killed.
FFMPEG_TIMEOUT_S = 60.0
#: Seconds an ffprobe header read may take before it is killed.
FFPROBE_TIMEOUT_S = 10.0
#: Frames read from libsndfile per call: a header that does not know its length (a FLAC streamed
#: to a pipe says 2**63 - 1 frames) must never size one huge allocation.
READ_BLOCK_FRAMES = 1 << 20
#: libsndfile's frame count when the header does not give one.
SF_UNKNOWN_FRAMES = 2**63 - 1
#: Bytes an MP3 decode may leave unread (trailing ID3v1/APE tags) before it counts as cut short.
MP3_UNREAD_SLACK_BYTES = 4096
#: Tags of the first MP3 frame that give the exact length; without them libsndfile estimates it.
MP3_LENGTH_TAGS = (b"Xing", b"Info")
#: Bytes after an ID3v2 tag searched for the first MP3 frame sync.
MP3_SYNC_SEARCH_BYTES = 4096
#: Bytes after the first frame sync searched for an :data:`MP3_LENGTH_TAGS` tag.
MP3_TAG_WINDOW_BYTES = 64

FFMPEG_MISSING = "ffmpeg is not installed (not found on PATH; e.g. apt-get install ffmpeg)"
FFPROBE_MISSING = "ffprobe is not installed (not found on PATH; it comes with ffmpeg)"
TORCHAUDIO_MISSING = "not installed (pip install asr-lightning[torchaudio])"
_EMPTY_HINT = "The file holds no audio: re-create it or leave it out of the dataset."


class _BackendError(Exception):
    """One backend could not decode; the message is the reason shown to the user."""


@dataclass(frozen=True)
class _Audio:
    """Encoded audio: a file on disk or bytes in memory (exactly one of ``path`` and ``data``)."""

    name: str  # how messages name it
    path: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    @property
    def ffmpeg_input(self) -> str:
        # "file:" keeps a path with a colon from being read as a protocol ("http:", "concat:").
        return "pipe:0" if self.data is not None else f"file:{self.path}"

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else self.path.open("rb")


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
    backends: Sequence[Backend] = DEFAULT_BACKENDS,
    ffmpeg_timeout_s: float = FFMPEG_TIMEOUT_S,
) -> np.ndarray:
    """Decode audio into float32 mono samples at ``sample_rate``.

    Args:
        source: a path, the encoded bytes of a file, or a binary file object (read to its end).
        sample_rate: the rate of the returned samples, in Hz.
        backends: decoders to try, in order; the first that succeeds wins.
        ffmpeg_timeout_s: seconds an ffmpeg decode may take before it is killed.

    Returns:
        ``(n,)`` float32 samples in [-1, 1] for PCM input; channels are averaged.

    Raises:
        AudioDecodeError: the file does not exist, or no backend could decode it.
        EmptyAudioError: the file is empty or decodes to zero samples.
        NonFiniteAudioError: the decoded samples hold NaN or infinity.
        ConfigError: an argument is invalid.
    """
    _check_options(sample_rate, backends, ffmpeg_timeout_s)
    return _load(_resolve(source), sample_rate, backends, ffmpeg_timeout_s)


def audio_duration(
    source: str | os.PathLike | bytes,
    backends: Sequence[Backend] = DEFAULT_BACKENDS,
    ffmpeg_timeout_s: float = FFMPEG_TIMEOUT_S,
) -> float:
    """The duration of audio in seconds, from its header where possible.

    libsndfile's header read comes first (an MP3 only when a Xing/Info frame gives its exact
    length), then ``ffprobe`` when ``"ffmpeg"`` is among the backends; when neither knows the
    length, the audio is decoded. A valid header with no frames gives 0.0; a truncated file may
    report the length its header claims, which decoding later corrects.

    Args:
        source: a path or the encoded bytes of a file.
        backends: decoders that may be used, as for :func:`load_audio`.
        ffmpeg_timeout_s: seconds an ffmpeg decode may take, should decoding be needed.

    Raises:
        AudioDecodeError: the file does not exist, or no backend could read it.
        EmptyAudioError: the file is empty (0 bytes).
    """
    _check_options(SAMPLE_RATE, backends, ffmpeg_timeout_s)
    audio = _resolve(source)
    readers = {"soundfile": _soundfile_duration, "ffmpeg": _ffprobe_duration}
    for backend in backends:
        if backend not in readers:
            continue
        try:
            return readers[backend](audio)
        except Exception as err:  # any failure only means the header did not say
            log.debug("%s has no duration for %s: %s", backend, audio.name, _reason(err))
    log.debug("decoding %s to measure its duration", audio.name)
    return len(_load(audio, SAMPLE_RATE, backends, ffmpeg_timeout_s)) / SAMPLE_RATE


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``(n,)`` or ``(n, channels)`` samples from ``orig_sr`` to ``target_sr`` Hz.

    Args:
        samples: audio along axis 0.
        orig_sr: the rate of ``samples``, in Hz.
        target_sr: the rate wanted, in Hz.

    Returns:
        float32 samples, ``round(n * target_sr / orig_sr)`` long; ``samples`` itself (as float32)
        when the rates are equal.
    """
    for name, rate in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or rate <= 0:
            raise ConfigError(f"{name} must be a positive integer number of Hz, got {rate!r}")
    samples = np.asarray(samples, dtype=np.float32)
    if orig_sr == target_sr:
        return samples
    return soxr.resample(samples, orig_sr, target_sr, quality=RESAMPLE_QUALITY)


def _check_options(sample_rate: int, backends: Sequence[str], ffmpeg_timeout_s: float) -> None:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    if isinstance(backends, str):
        raise ConfigError(f"backends must be a sequence such as ({backends!r},), not a string")
    known = get_args(Backend)
    unknown = [backend for backend in backends if backend not in known]
    if unknown or not backends:
        raise ConfigError(
            f"backends must name at least one of {', '.join(known)}; got {list(backends)!r}"
        )
    if not ffmpeg_timeout_s > 0:
        raise ConfigError(f"ffmpeg_timeout_s must be > 0 seconds, got {ffmpeg_timeout_s!r}")


def _resolve(source: AudioSource) -> _Audio:
    """Check that the source exists and is not empty; read file objects into memory."""
    if isinstance(source, bytes | bytearray | memoryview):
        audio = _Audio(name=f"<{len(source)} bytes>", data=bytes(source))
    elif isinstance(source, str | os.PathLike):
        path = Path(os.fsdecode(source))
        if not path.is_file():
            reason = "is a directory, not a file" if path.is_dir() else "file not found"
            raise AudioDecodeError(str(path), {"file": reason}, "Check the path.")
        audio = _Audio(name=str(path), path=path)
    elif callable(getattr(source, "read", None)):
        data = source.read()
        if not isinstance(data, bytes | bytearray):
            raise ConfigError(
                f"a file object source must give bytes, got {type(data).__name__}: "
                "open the file in binary mode ('rb')"
            )
        name = getattr(source, "name", None)
        audio = _Audio(name=name if isinstance(name, str) else "<file object>", data=bytes(data))
    else:
        raise ConfigError(
            f"cannot load audio from a {type(source).__name__}: "
            "give a path, the file's bytes or a binary file object"
        )
    if audio.size == 0:
        raise EmptyAudioError(audio.name, {"file": "empty file (0 bytes)"}, _EMPTY_HINT)
    return audio


def _load(
    audio: _Audio, sample_rate: int, backends: Sequence[Backend], timeout_s: float
) -> np.ndarray:
    """Try each backend in turn; the first decode decides (see the module docstring)."""
    reasons: dict[str, str] = {}
    cause: Exception | None = None
    for backend in backends:
        try:
            samples, rate = _decode(backend, audio, sample_rate, timeout_s)
        except Exception as err:  # a failing decoder is a reason; the next one may cope
            reasons[backend], cause = _reason(err), err
            log.debug("%s could not decode %s: %s", backend, audio.name, reasons[backend])
            continue
        samples = _to_mono(samples)
        _check_content(samples, audio.name, backend)
        resampled = resample(samples, rate, sample_rate)
        if resampled.size == 0:
            reason = f"{samples.size} samples at {rate} Hz are none at {sample_rate} Hz"
            raise EmptyAudioError(audio.name, {backend: reason}, _EMPTY_HINT)
        return resampled
    raise AudioDecodeError(audio.name, reasons, _hint(reasons)) from cause


def _decode(
    backend: Backend, audio: _Audio, sample_rate: int, timeout_s: float
) -> tuple[np.ndarray, int]:
    """Samples ``(n,)`` or ``(n, channels)`` and their rate, from one backend."""
    if backend == "soundfile":
        return _decode_soundfile(audio)
    if backend == "ffmpeg":
        return _decode_ffmpeg(audio, sample_rate, timeout_s), sample_rate
    if backend == "librosa":
        return _decode_librosa(audio)
    return _decode_torchaudio(audio)


def _to_mono(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _check_content(samples: np.ndarray, name: str, backend: str) -> None:
    if samples.size == 0:
        raise EmptyAudioError(name, {backend: "decoded to 0 samples"}, _EMPTY_HINT)
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise NonFiniteAudioError(
            name,
            {backend: f"{bad} of {samples.size} samples are NaN or infinite"},
            "Re-export the file with finite samples, or leave it out of the dataset.",
        )


def _reason(err: Exception) -> str:
    if isinstance(err, _BackendError):
        return str(err)
    if isinstance(err, sf.LibsndfileError):  # its str() names a file object, not the file
        return f"libsndfile: {err.error_string}"
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _hint(reasons: dict[str, str]) -> str:
    hint = "Check that the file is complete and holds audio in a supported format"
    others = "formats libsndfile cannot read (M4A/AAC, WMA, video)"
    if "ffmpeg" not in reasons:
        hint += f"; add 'ffmpeg' to backends to read {others}"
    elif reasons["ffmpeg"] == FFMPEG_MISSING:
        hint += f"; install ffmpeg (e.g. apt-get install ffmpeg) to read {others}"
    elif "timed out" in reasons["ffmpeg"]:
        hint += "; raise ffmpeg_timeout_s for long files"
    return hint + "."


def _decode_soundfile(audio: _Audio) -> tuple[np.ndarray, int]:
    with audio.open() as stream:
        with sf.SoundFile(stream) as sound:
            blocks = list(_read_blocks(sound))
            rate, frames, file_format = sound.samplerate, sound.frames, sound.format
        unread = audio.size - stream.tell()
    if file_format == "MP3" and unread > MP3_UNREAD_SLACK_BYTES:
        # libsndfile stops at mpg123's length estimate, which for a VBR MP3 without a Xing
        # header can be half the file: rather than return half the audio, let ffmpeg decode it.
        raise _BackendError(
            f"libsndfile stopped at its estimated MP3 length ({frames} frames) with "
            f"{unread} of {audio.size} bytes unread (a VBR MP3 without a Xing header)"
        )
    samples = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
    return samples, rate


def _read_blocks(sound: sf.SoundFile) -> Iterator[np.ndarray]:
    """Blocks of ``(frames, channels)`` float32 samples until the end of the stream."""
    while True:
        block = sound.read(READ_BLOCK_FRAMES, dtype="float32", always_2d=True)
        if not len(block):
            return
        yield block


def _decode_ffmpeg(audio: _Audio, sample_rate: int, timeout_s: float) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise _BackendError(FFMPEG_MISSING)
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-threads", "0"]
    command += ["-i", audio.ffmpeg_input, "-f", "f32le", "-acodec", "pcm_f32le"]
    # ffmpeg mixes stereo to mono as (L + R) / sqrt(2), which can clip; a matrix normalised to
    # a gain of 1 averages the channels instead (and downmixes surround with its usual weights).
    command += ["-ac", "1", "-rematrix_maxval", "1.0", "-ar", str(sample_rate), "pipe:1"]
    raw = _run_tool(command, audio, timeout_s)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)  # (n,) mono at sample_rate


def _run_tool(command: list[str], audio: _Audio, timeout_s: float) -> bytes:
    """Run ffmpeg or ffprobe, feeding in-memory audio through stdin; its stdout on success."""
    tool = Path(command[0]).name
    stdin = {"input": audio.data} if audio.data is not None else {"stdin": subprocess.DEVNULL}
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False, **stdin)
    except subprocess.TimeoutExpired as err:
        raise _BackendError(f"{tool} timed out after {timeout_s:g} s") from err
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        message = lines[-1] if lines else "no message"
        raise _BackendError(f"{tool} exited with status {done.returncode}: {message}")
    return done.stdout


def _decode_librosa(audio: _Audio) -> tuple[np.ndarray, int]:
    import librosa  # heavy, and only needed when the backends before it failed

    # librosa warns when it falls back to audioread (filtered once at import: catch_warnings()
    # is not thread-safe, and durations are measured in threads).
    source = audio.path if audio.path is not None else io.BytesIO(audio.data)
    samples, rate = librosa.load(source, sr=None, mono=False, dtype=np.float32)
    return samples.T, int(rate)  # (channels, n) -> (n, channels)


def _decode_torchaudio(audio: _Audio) -> tuple[np.ndarray, int]:
    if find_spec("torchaudio") is None:
        raise _BackendError(TORCHAUDIO_MISSING)
    import torchaudio

    source = str(audio.path) if audio.path is not None else io.BytesIO(audio.data)
    waveform, rate = torchaudio.load(source)  # (channels, n) float32
    return waveform.numpy().T, int(rate)


def _soundfile_duration(audio: _Audio) -> float:
    with audio.open() as stream:
        info = sf.info(stream)
        if info.format == "MP3" and not _mp3_has_length_tag(stream):
            raise _BackendError("an MP3 without a Xing/Info frame: libsndfile only estimates it")
    if not 0 <= info.frames < SF_UNKNOWN_FRAMES:
        raise _BackendError("the header does not give the length")
    return info.frames / info.samplerate


def _ffprobe_duration(audio: _Audio) -> float:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise _BackendError(FFPROBE_MISSING)
    command = [ffprobe, "-v", "error", "-show_entries", "format=duration"]
    command += ["-of", "default=noprint_wrappers=1:nokey=1", audio.ffmpeg_input]
    text = _run_tool(command, audio, FFPROBE_TIMEOUT_S).decode(errors="replace").strip()
    try:
        duration = float(text)
    except ValueError as err:
        raise _BackendError(f"ffprobe gives no duration ({text!r})") from err
    if not math.isfinite(duration) or duration < 0:
        raise _BackendError(f"ffprobe gives an invalid duration ({text!r})")
    return duration


def _mp3_has_length_tag(stream: BinaryIO) -> bool:
    """Whether the first MP3 frame is a Xing/Info frame, which gives the exact length."""
    stream.seek(0)
    head = stream.read(10)
    start = 0
    if head[:3] == b"ID3" and len(head) == 10:
        # ID3v2: a 10-byte header, a "syncsafe" size of 4 x 7 bits, then an optional footer.
        size = 0
        for byte in head[6:10]:
            size = size << 7 | byte & 0x7F
        start = 10 + size + (10 if head[5] & 0x10 else 0)
    stream.seek(start)
    window = stream.read(MP3_SYNC_SEARCH_BYTES)
    sync = next(
        (i for i in range(len(window) - 1) if window[i] == 0xFF and window[i + 1] & 0xE0 == 0xE0),
        None,
    )
    if sync is None:
        return False
    frame = window[sync : sync + MP3_TAG_WINDOW_BYTES]
    return any(tag in frame for tag in MP3_LENGTH_TAGS)
