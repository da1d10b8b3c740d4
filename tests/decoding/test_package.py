"""An LM and its decoding settings travel in a model folder; explicit options override them."""

from __future__ import annotations

import json

import pytest

from asr_lightning.artifacts import DECODING_FILE, LM_SUBDIR
from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions
from asr_lightning.decoding.package import (
    copy_decoding,
    load_decoding,
    resolve_decoding,
    save_decoding,
)
from asr_lightning.errors import ConfigError, ModelError


@pytest.fixture
def lm(tmp_path):
    return write_arpa(tmp_path / "words.arpa", *kneser_ney(["a b", "b a"], order=2))


def test_the_lm_is_copied_in_and_found_again_after_a_move(tmp_path, lm):
    folder = tmp_path / "hf_model"
    folder.mkdir()
    saved = save_decoding(DecodingOptions(lm=str(lm), alpha=0.8, beam_width=16), folder)

    assert saved.lm == str(folder / LM_SUBDIR / "words.arpa")
    stored = json.loads((folder / DECODING_FILE).read_text())
    assert stored["lm"] == f"{LM_SUBDIR}/words.arpa"  # relative: the folder can move
    moved = folder.rename(tmp_path / "moved")
    loaded = load_decoding(moved)
    assert loaded == DecodingOptions(
        lm=str(moved / LM_SUBDIR / "words.arpa"), alpha=0.8, beam_width=16
    )
    assert (moved / LM_SUBDIR / "words.arpa").read_bytes() == lm.read_bytes()


def test_default_options_write_nothing_and_a_plain_folder_decodes_greedily(tmp_path):
    assert save_decoding(DEFAULT_DECODING, tmp_path) == DEFAULT_DECODING
    assert not (tmp_path / DECODING_FILE).exists()
    assert load_decoding(tmp_path) is None
    assert resolve_decoding(tmp_path) == DEFAULT_DECODING
    assert resolve_decoding(None, {"beam_width": 4}) == DecodingOptions(beam_width=4)


def test_explicit_options_override_the_folder_field_by_field(tmp_path, lm):
    save_decoding(DecodingOptions(lm=str(lm), alpha=0.8), tmp_path / "m")
    folder_lm = str(tmp_path / "m" / LM_SUBDIR / "words.arpa")

    assert resolve_decoding(tmp_path / "m", {"beta": 2.0}) == DecodingOptions(
        lm=folder_lm, alpha=0.8, beta=2.0
    )
    greedy = resolve_decoding(tmp_path / "m", {"method": "greedy"})
    assert not greedy.beam and greedy.lm is None  # greedy drops the folder's LM, not an error


def test_an_export_carries_the_settings_along(tmp_path, lm):
    save_decoding(DecodingOptions(lm=str(lm)), tmp_path / "hf")
    copied = copy_decoding(tmp_path / "hf", tmp_path / "onnx")
    assert copied is not None and load_decoding(tmp_path / "onnx") == DecodingOptions(
        lm=str(tmp_path / "onnx" / LM_SUBDIR / "words.arpa")
    )
    assert copy_decoding(tmp_path / "plain", tmp_path / "elsewhere") is None


def test_broken_settings_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="missing.arpa does not exist"):
        save_decoding(DecodingOptions(lm=str(tmp_path / "missing.arpa")), tmp_path)
    (tmp_path / DECODING_FILE).write_text('{"method": "beam", "width": 3}')
    with pytest.raises(ModelError, match=f"{DECODING_FILE} is not valid decoding settings.*fix"):
        load_decoding(tmp_path)
    (tmp_path / DECODING_FILE).write_text('{"lm": "language_model/gone.arpa"}')
    with pytest.raises(ModelError, match="names the LM language_model/gone.arpa"):
        load_decoding(tmp_path)
