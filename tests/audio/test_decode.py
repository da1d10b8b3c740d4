"""Decoding real and broken files into float32 mono samples at 16 kHz."""

from __future__ import annotations

import io
import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from asr_lightning.audio.decode import (
    DEFAULT_BACKENDS,
    SAMPLE_RATE,
    audio_duration,
    load_audio,
    resample,
)
from asr_lightning.errors import AudioDecodeError, ConfigError, NonFiniteAudioError
from tests.fixtures.bad_audio import CASE_NAMES, BadCase

AN4_SPH = "an4/wav/an4_clstk/fash/an251-fash-b.sph"
FSDD_WAV = "fsdd/recordings/0_george_0.wav"
HAS_FFMPEG = shutil.which("ffmpeg") is not None
needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg is not installed")
# The librosa backend warns when it falls back from libsndfile to audioread; expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySoundFile failed:UserWarning",
    "ignore:librosa.core.audio.__audioread_load:FutureWarning",
)


def _case(bad_audio: dict[str, BadCase], name: str) -> BadCase:
    if name not in bad_audio:
        pytest.skip(f"case {name} is only made when ffmpeg is installed")
    return bad_audio[name]


def _sine(freq: float, rate: int, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _refuse(*args, **kwargs):
    raise AssertionError("audio_duration decoded samples or ran a subprocess")


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_audio_case_decodes_or_raises_as_described(bad_audio, name):
    case = _case(bad_audio, name)
    if not case.decodes:
        with pytest.raises(AudioDecodeError) as raised:
            load_audio(case.path)
        assert type(raised.value) is case.error
        assert str(case.path) in str(raised.value)
        return
    samples = load_audio(case.path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / SAMPLE_RATE == pytest.approx(case.duration, abs=case.tolerance)
    assert np.abs(samples).max() <= 1.0
    if case.peak is not None:
        assert np.abs(samples).max() == pytest.approx(case.peak, abs=case.peak_tolerance)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_audio_duration_of_bad_audio_case(bad_audio, name):
    case = _case(bad_audio, name)
    expected = case.header_duration if case.header_duration is not None else case.duration
    if expected is None:
        with pytest.raises(AudioDecodeError) as raised:
            audio_duration(case.path)
        assert type(raised.value) is case.error
    else:
        assert audio_duration(case.path) == pytest.approx(expected, abs=case.tolerance)


@pytest.mark.parametrize(
    ("backend", "name"),
    [
        pytest.param("ffmpeg", "mp3", marks=needs_ffmpeg),
        pytest.param("ffmpeg", "stereo_48k", marks=needs_ffmpeg),
        ("librosa", "ogg_vorbis"),
        ("librosa", "mp3"),
    ],
)
def test_one_backend_alone_decodes(bad_audio, backend, name):
    case = bad_audio[name]
    samples = load_audio(case.path, backends=(backend,))
    assert len(samples) / SAMPLE_RATE == pytest.approx(case.duration, abs=case.tolerance)
    assert np.abs(samples).max() == pytest.approx(case.peak, abs=case.peak_tolerance)


def test_48k_stereo_sine_comes_back_16k_mono_by_averaging(tmp_path):
    sine = _sine(1000.0, 48_000, 1.0, 1.0)
    path = tmp_path / "sine.wav"
    sf.write(path, np.stack([0.6 * sine, 0.2 * sine], axis=1), 48_000, subtype="FLOAT")
    backends = [("soundfile",), ("ffmpeg",)] if HAS_FFMPEG else [("soundfile",)]
    for chosen in backends:
        samples = load_audio(path, backends=chosen)
        assert samples.shape == (SAMPLE_RATE,), chosen
        assert _dominant_hz(samples, SAMPLE_RATE) == pytest.approx(1000.0, abs=2.0), chosen
        assert np.abs(samples[100:-100]).max() == pytest.approx(0.4, abs=0.01), chosen


def test_fsdd_8k_wav_is_resampled_to_16k(shared_data):
    path = shared_data / FSDD_WAV
    native, rate = sf.read(path, dtype="float32")
    assert rate == 8_000
    samples = load_audio(path)
    assert len(samples) == 2 * len(native)
    assert audio_duration(path) == pytest.approx(len(native) / rate)
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(np.sqrt(np.mean(native**2)), rel=0.05)


def test_an4_sphere_file_decodes_at_16k(shared_data):
    path = shared_data / AN4_SPH
    samples = load_audio(path)
    assert samples.dtype == np.float32
    assert 0.5 < len(samples) / SAMPLE_RATE < 10.0
    assert audio_duration(path) == pytest.approx(len(samples) / SAMPLE_RATE)
    assert np.abs(samples).max() > 0.01  # speech, not silence


def test_bytes_and_file_objects_decode_like_paths(bad_audio):
    path = bad_audio["ogg_vorbis"].path
    expected = load_audio(path)
    np.testing.assert_array_equal(load_audio(path.read_bytes()), expected)
    np.testing.assert_array_equal(load_audio(io.BytesIO(path.read_bytes())), expected)
    with path.open("rb") as stream:
        np.testing.assert_array_equal(load_audio(stream), expected)
    assert audio_duration(path.read_bytes()) == pytest.approx(2.0, abs=0.01)


@needs_ffmpeg
def test_ffmpeg_decodes_bytes_through_stdin(bad_audio):
    case = bad_audio["m4a_aac"]
    from_bytes = load_audio(case.path.read_bytes(), backends=("ffmpeg",))
    np.testing.assert_array_equal(from_bytes, load_audio(case.path, backends=("ffmpeg",)))


def test_errors_for_bytes_name_them_and_text_files_are_refused(bad_audio, tmp_path):
    data = bad_audio["random_bytes"].path.read_bytes()
    with pytest.raises(AudioDecodeError, match=f"<{len(data)} bytes>"):
        load_audio(data, backends=("soundfile",))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with text.open() as stream, pytest.raises(ConfigError, match="binary mode"):
        load_audio(stream)


def test_integer_pcm_is_scaled_to_minus_one_to_one(tmp_path):
    path = tmp_path / "full_scale.wav"
    sf.write(path, np.array([-32768, 32767, 0, 16384], np.int16), SAMPLE_RATE)
    samples = load_audio(path)
    np.testing.assert_array_equal(samples, [-1.0, 32767 / 32768, 0.0, 0.5])


@needs_ffmpeg
def test_first_backend_in_the_given_order_wins(bad_audio):
    path = bad_audio["stereo_48k"].path
    by_ffmpeg = load_audio(path, backends=("ffmpeg",))
    by_soundfile = load_audio(path, backends=("soundfile",))
    assert not np.array_equal(by_ffmpeg, by_soundfile)  # different resamplers
    np.testing.assert_array_equal(load_audio(path, backends=("ffmpeg", "soundfile")), by_ffmpeg)
    np.testing.assert_array_equal(load_audio(path, backends=("soundfile", "ffmpeg")), by_soundfile)


def test_error_lists_every_backend_reason_in_order(bad_audio):
    path = bad_audio["random_bytes"].path
    with pytest.raises(AudioDecodeError) as raised:
        load_audio(path)
    err = raised.value
    assert list(err.reasons) == list(DEFAULT_BACKENDS)
    assert "pip install asr-lightning[torchaudio]" in err.reasons["torchaudio"]
    assert "Format not recognised" in err.reasons["soundfile"]
    message = str(err)
    assert str(path) in message and "Check that the file is complete" in message
    assert all(f"- {backend}:" in message for backend in DEFAULT_BACKENDS)
    assert err.__cause__ is not None
    with pytest.raises(AudioDecodeError) as reordered:
        load_audio(path, backends=("librosa", "soundfile"))
    assert list(reordered.value.reasons) == ["librosa", "soundfile"]
    assert "add 'ffmpeg' to backends" in str(reordered.value)


def test_content_errors_are_not_retried_on_other_backends(bad_audio):
    with pytest.raises(NonFiniteAudioError) as raised:
        load_audio(bad_audio["nan_samples"].path)
    assert list(raised.value.reasons) == ["soundfile"]
    assert "10 of 32000 samples are NaN or infinite" in str(raised.value)


def test_missing_file_fails_at_once(tmp_path):
    with pytest.raises(AudioDecodeError) as raised:
        load_audio(tmp_path / "nope.wav")
    assert raised.value.reasons == {"file": "file not found"}
    assert str(tmp_path / "nope.wav") in str(raised.value)
    with pytest.raises(AudioDecodeError, match="is a directory"):
        audio_duration(tmp_path)


@needs_ffmpeg
def test_missing_ffmpeg_is_a_reason_with_the_fix(bad_audio, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no ffprobe
    with pytest.raises(AudioDecodeError) as raised:
        load_audio(bad_audio["m4a_aac"].path, backends=("soundfile", "ffmpeg"))
    assert "ffmpeg is not installed" in raised.value.reasons["ffmpeg"]
    assert "install ffmpeg" in str(raised.value)


@needs_ffmpeg
def test_ffmpeg_is_killed_after_its_timeout(bad_audio):
    with pytest.raises(AudioDecodeError, match="timed out") as raised:
        load_audio(bad_audio["m4a_aac"].path, backends=("ffmpeg",), ffmpeg_timeout_s=1e-3)
    assert "raise ffmpeg_timeout_s" in str(raised.value)


@needs_ffmpeg
def test_vbr_mp3_without_xing_is_not_cut_short(bad_audio):
    case = bad_audio["mp3_vbr_no_xing"]
    estimated = sf.info(case.path).duration  # libsndfile's guess, where it would stop
    samples = load_audio(case.path, backends=("soundfile", "ffmpeg"))
    assert len(samples) / SAMPLE_RATE == pytest.approx(case.duration, abs=case.tolerance)
    if estimated < case.duration - case.tolerance:  # this libsndfile does stop early
        with pytest.raises(AudioDecodeError, match="bytes unread"):
            load_audio(case.path, backends=("soundfile",))


def test_duration_of_ten_minutes_reads_only_the_header(bad_audio, monkeypatch):
    path = bad_audio["ten_minutes"].path
    monkeypatch.setattr(sf.SoundFile, "read", _refuse)
    monkeypatch.setattr(subprocess, "run", _refuse)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        assert audio_duration(path) == 600.0
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.05


def test_duration_of_mp3_with_xing_frame_reads_only_the_header(bad_audio, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _refuse)  # no ffprobe either
    monkeypatch.setattr(sf.SoundFile, "read", _refuse)
    assert audio_duration(bad_audio["mp3"].path) == pytest.approx(2.0, abs=0.01)


@needs_ffmpeg
def test_duration_of_mp3_without_xing_frame_is_sane(bad_audio):
    case = bad_audio["mp3_vbr_no_xing"]
    for source in (case.path, case.path.read_bytes()):  # ffprobe reads a pipe as N/A: decode
        assert audio_duration(source) == pytest.approx(case.duration, abs=case.tolerance)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0},
        {"sample_rate": 16000.0},
        {"backends": ()},
        {"backends": ("sox",)},
        {"backends": "ffmpeg"},
        {"ffmpeg_timeout_s": 0},
    ],
)
def test_invalid_options_are_config_errors(bad_audio, kwargs):
    with pytest.raises(ConfigError):
        load_audio(bad_audio["pcm_24"].path, **kwargs)


def test_resample_length_dtype_and_identity():
    sine = _sine(440.0, 22_050, 1.0, 0.5)
    out = resample(sine, 22_050, SAMPLE_RATE)
    assert out.dtype == np.float32 and out.shape == (SAMPLE_RATE,)
    assert _dominant_hz(out, SAMPLE_RATE) == pytest.approx(440.0, abs=2.0)
    assert resample(sine, 22_050, 22_050) is sine
    assert resample(np.stack([sine, sine], axis=1), 22_050, SAMPLE_RATE).shape == (SAMPLE_RATE, 2)
    with pytest.raises(ConfigError, match="orig_sr"):
        resample(sine, 0, SAMPLE_RATE)


def test_unknown_source_type_is_a_config_error():
    with pytest.raises(ConfigError, match="path, the file's bytes or a binary file object"):
        load_audio(12345)  # type: ignore[arg-type]
