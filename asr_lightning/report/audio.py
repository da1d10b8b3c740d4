"""Audio players for the report's utterances: the clip inside the page, or a link to its file.

A self-contained page carries its clips as ``data:`` URIs, re-encoded through the decoder chain
every runtime reads audio with (16 kHz mono) as Ogg Opus, about 4 KB a second of speech. A clip
whose encoding exceeds ``max_clip_bytes``, or that would take the page's embedded audio past
``max_page_bytes``, is linked to its file instead (a ``file:`` URI: it plays where the file is).
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import soundfile

from asr_lightning.audio.decode import SAMPLE_RATE, load_audio
from asr_lightning.errors import AsrLightningError

log = logging.getLogger(__name__)

#: The embedded clips' container and codec (libsndfile names), and their media type.
FORMAT, SUBTYPE, MEDIA_TYPE = "OGG", "OPUS", "audio/ogg"


@dataclass(frozen=True)
class Player:
    """What the page plays for one utterance."""

    src: str | None  # a data: URI, a file: URI, or None when there is nothing to play
    embedded: bool
    note: str  # the clip's size, or why it is linked or missing


def encode_clip(path: str | Path) -> bytes:
    """A clip as 16 kHz mono Ogg Opus bytes.

    Raises:
        AudioDecodeError: the file cannot be read.
    """
    samples = load_audio(str(path), SAMPLE_RATE)  # (n,) float32
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format=FORMAT, subtype=SUBTYPE)
    return buffer.getvalue()


class ClipEmbedder:
    """Players for a page's clips, embedding each while the page's budget lasts.

    Args:
        max_clip_bytes: Largest encoded clip embedded; larger ones are linked.
        max_page_bytes: Embedded audio of the whole page at most; later clips are linked.
    """

    def __init__(self, max_clip_bytes: int, max_page_bytes: int) -> None:
        self.max_clip_bytes = max_clip_bytes
        self.max_page_bytes = max_page_bytes
        self.embedded_bytes = 0

    def player(self, audio: str | None) -> Player:
        """The player of an utterance whose audio is the file ``audio`` (``None``: unknown)."""
        if audio is None:
            return Player(None, False, "no audio file in the record")
        link = Path(audio).absolute().as_uri()
        try:
            encoded = encode_clip(audio)
        except AsrLightningError as err:
            log.warning("report: cannot embed %s: %s", audio, str(err).splitlines()[0])
            return Player(link, False, f"not embedded: {str(err).splitlines()[0]}")
        size = len(encoded)
        if size > self.max_clip_bytes:
            return Player(link, False, f"linked: {size // 1024} KB is over the clip cap")
        if self.embedded_bytes + size > self.max_page_bytes:
            return Player(link, False, "linked: the page's audio cap is reached")
        self.embedded_bytes += size
        uri = f"data:{MEDIA_TYPE};base64,{base64.b64encode(encoded).decode('ascii')}"
        return Player(uri, True, f"{max(1, size // 1024)} KB")
