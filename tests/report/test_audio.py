"""Players: real AN4 clips embedded as Ogg Opus data URIs, linked past the caps."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import soundfile

from asr_lightning.audio.decode import load_audio
from asr_lightning.report.audio import MEDIA_TYPE, ClipEmbedder, encode_clip

AN4_CLIP = Path("an4/wav/an4test_clstk/fcaw/an406-fcaw-b.sph")


def test_a_clip_is_embedded_as_16_khz_opus_of_its_length(shared_data: Path):
    clip = shared_data / AN4_CLIP
    player = ClipEmbedder(max_clip_bytes=256 * 1024, max_page_bytes=1 << 20).player(str(clip))
    prefix = f"data:{MEDIA_TYPE};base64,"
    assert player.embedded and player.src.startswith(prefix) and player.note.endswith("KB")
    encoded = base64.b64decode(player.src.removeprefix(prefix))
    samples, rate = soundfile.read(io.BytesIO(encoded))
    original = load_audio(clip)
    assert rate == 16_000 and abs(len(samples) - len(original)) < 0.02 * rate
    assert len(encoded) < len(original) * 2 / 5  # a fraction of its 16-bit PCM


def test_clips_past_a_cap_or_unreadable_are_linked(shared_data: Path, tmp_path: Path):
    clip = str(shared_data / AN4_CLIP)
    size = len(encode_clip(clip))
    small = ClipEmbedder(max_clip_bytes=size - 1, max_page_bytes=1 << 20).player(clip)
    assert not small.embedded and small.src == Path(clip).absolute().as_uri()
    assert "over the clip cap" in small.note
    page = ClipEmbedder(max_clip_bytes=size, max_page_bytes=size + 10)
    assert page.player(clip).embedded and not page.player(clip).embedded  # the budget is spent
    assert page.embedded_bytes == size
    missing = page.player(str(tmp_path / "gone.wav"))
    assert not missing.embedded and missing.src.startswith("file://")
    assert "not embedded" in missing.note
    assert ClipEmbedder(1, 1).player(None).src is None
