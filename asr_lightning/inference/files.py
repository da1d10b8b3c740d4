"""Expanding command-line audio arguments (files, folders, globs) into a list of files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

#: Suffixes picked up when a folder is given (any format the decoder chain reads).
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".sph", ".aiff", ".aif"}
)
GLOB_CHARACTERS = frozenset("*?[")


def expand_audio_args(arguments: Sequence[str]) -> list[str]:
    """Files named by ``arguments``, in order, without duplicates.

    A folder stands for every audio file under it (recursively, sorted); an argument with
    ``*``, ``?`` or ``[`` is a glob (``**`` recurses); anything else is kept as it is, so that
    a missing file is reported by the transcriber like any other unreadable input.
    """
    files: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = (p for p in sorted(path.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES)
            files.extend(str(p) for p in found if p.is_file())
        elif GLOB_CHARACTERS & set(argument):
            files.extend(
                p for p in sorted(glob.glob(argument, recursive=True)) if Path(p).is_file()
            )
        else:
            files.append(argument)
    return list(dict.fromkeys(files))
