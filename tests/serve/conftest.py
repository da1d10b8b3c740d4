"""Real speech clips in the formats a client sends, and the tiny model the servers serve."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_lightning.audio.decode import load_audio
from asr_lightning.inference.transcriber import Transcriber
from tests.model.tiny import scratch_module

AN4_CLIP = Path("an4/wav/an4test_clstk/fcaw/an406-fcaw-b.sph")


@pytest.fixture(scope="session")
def speech(shared_data) -> np.ndarray:
    """An AN4 utterance: (n,) float32 at 16 kHz."""
    return load_audio(shared_data / AN4_CLIP)


@pytest.fixture(scope="session")
def encoded(speech, tmp_path_factory) -> dict[str, bytes]:
    """The utterance encoded as WAV, FLAC, Ogg Opus and MP3 files (bytes), and 16-bit PCM."""
    root = tmp_path_factory.mktemp("encoded")
    files: dict[str, bytes] = {}
    for name, fmt in (("wav", "WAV"), ("flac", "FLAC")):
        buffer = io.BytesIO()
        sf.write(buffer, speech, 16_000, format=fmt, subtype="PCM_16")
        files[name] = buffer.getvalue()
    wav = root / "clip.wav"
    wav.write_bytes(files["wav"])
    for name, codec in (("opus", "libopus"), ("mp3", "libmp3lame")):
        out = root / f"clip.{name}"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", codec, str(out)], check=True
        )
        files[name] = out.read_bytes()
    files["pcm"] = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    return files


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny random wav2vec2 (random models emit characters: transcripts are not empty)."""
    folder = tmp_path_factory.mktemp("tiny") / "hf_model"
    scratch_module("wav2vec2", seed=5).save_hf(folder)
    return folder


@pytest.fixture(scope="module")
def transcriber(model_folder) -> Transcriber:
    return Transcriber.from_pretrained(model_folder)
