"""An LM and its decoding settings that travel with the model.

A model folder (the HF folder ``fit`` writes, an ONNX folder, either inside a SageMaker model
dir) may hold ``decoding.json`` (:class:`DecodingOptions`, the LM path relative to the folder)
and the LM file in ``language_model/``. ``transcribe``, ``serve`` and the SageMaker handler
decode with them when no ``--decoding.*`` is given; explicit options override them field by
field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asr_lightning.artifacts import DECODING_FILE, LM_SUBDIR
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions
from asr_lightning.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


def save_decoding(options: DecodingOptions, folder: str | Path) -> DecodingOptions:
    """Write ``options`` into a model folder, with a copy of its LM; returns the saved options.

    Nothing is written for the default (greedy) options.

    Raises:
        ConfigError: the LM file does not exist.
    """
    folder = Path(folder)
    if options == DEFAULT_DECODING:
        return options
    saved = options
    if options.lm:
        source = Path(options.lm)
        if not source.is_file():
            raise ConfigError(
                f"decoding.lm {options.lm} does not exist: give an ARPA or KenLM file"
            )
        target = folder / LM_SUBDIR / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        saved = dataclasses.replace(options, lm=f"{LM_SUBDIR}/{source.name}")
    (folder / DECODING_FILE).write_text(json.dumps(saved.to_dict(), indent=2) + "\n")
    log.info("the model in %s decodes with %s", folder, options.describe())
    return dataclasses.replace(saved, lm=str(folder / saved.lm) if saved.lm else None)


def load_decoding(folder: str | Path) -> DecodingOptions | None:
    """The decoding settings a model folder carries (LM path made absolute), or ``None``.

    Raises:
        ModelError: ``decoding.json`` is unreadable or names an LM the folder lacks.
    """
    path = Path(folder) / DECODING_FILE
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        options = DecodingOptions(**values)
    except (ValueError, TypeError) as err:
        raise ModelError(f"{path} is not valid decoding settings: {err}; fix or delete it") from err
    if options.lm:
        lm = Path(folder) / options.lm
        if not lm.is_file():
            raise ModelError(f"{path} names the LM {options.lm}, which {folder} lacks")
        options = dataclasses.replace(options, lm=str(lm))
    return options


def copy_decoding(source: str | Path, target: str | Path) -> DecodingOptions | None:
    """Carry a folder's decoding settings and LM over to another folder (an export)."""
    options = load_decoding(source)
    if options is not None:
        save_decoding(options, target)
    return options


def resolve_decoding(
    folder: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> DecodingOptions:
    """The options to decode a folder's model with: its own, with ``overrides`` on top.

    Args:
        folder: the model folder (``None`` or a file such as a ``.ckpt``: no saved settings).
        overrides: fields given explicitly (``--decoding.*``), which win.
    """
    saved = None
    if folder is not None and Path(folder).is_dir():
        saved = load_decoding(folder)
    base = saved or DEFAULT_DECODING
    given = dict(overrides or {})
    if given.get("method") == "greedy" and "lm" not in given:
        given["lm"] = None  # greedy decoding of a folder that carries an LM: without it
    return dataclasses.replace(base, **given)
