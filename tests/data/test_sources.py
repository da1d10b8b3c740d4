"""Sources: manifests, tables, Common Voice folders and Hugging Face datasets, read from disk."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from asr_lightning.audio.decode import load_audio
from asr_lightning.data.sources import (
    SourceConfig,
    Utterance,
    iter_source,
    load_source,
    parse_spec,
    read_manifest,
    read_source,
    write_manifest,
)
from asr_lightning.errors import ConfigError, DataSourceError

#: Common Voice's TSV header (releases 17+ add sentence_id/sentence_domain; both are read).
CV_HEADER = [
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
]
#: Sentences that break a quoting CSV reader: a lone double quote, a leading quote, a comma.
CV_SENTENCES = {
    "train": ['He said "hello, there.', '"Quoted" at the start', "It's fine"],
    "dev": ['Five inches is 5" long'],
    "test": ["Plain text"],
}


def _fsdd_wav(shared_data: Path, index: int = 0) -> Path:
    return sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[index]


# ------------------------------------------------------------------------------ manifests
def test_manifest_resolves_relative_paths_and_ignores_extra_fields(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    manifest = tmp_path / "m.jsonl"
    lines = [
        {"audio_filepath": "audio/a.wav", "text": "A", "duration": 1.5, "lang": "en"},
        {"audio_filepath": "/abs/b.wav", "text": "B", "speaker": 7, "id": "utt-b"},
    ]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    a, b = load_source(str(manifest))
    assert a == Utterance("audio/a.wav", str(tmp_path / "audio" / "a.wav"), "A", 1.5, None)
    assert b == Utterance("utt-b", "/abs/b.wav", "B", None, "7")


def test_malformed_manifest_line_names_file_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    good = json.dumps({"audio_filepath": "a.wav", "text": "A"})
    manifest.write_text(f"{good}\n\n{{'audio_filepath': 'b.wav'\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match=r"bad\.jsonl:3"):
        load_source(str(manifest))


def test_manifest_without_text_lists_the_fields(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "a.wav", "words": "A"}) + "\n")
    with pytest.raises(DataSourceError, match="available columns: audio_filepath, words"):
        load_source(str(manifest))


def test_write_manifest_round_trips(tmp_path: Path) -> None:
    utts = [Utterance("x", str(tmp_path / "x.wav"), 'say "hi"', 1.25, "spk")]
    path = write_manifest(utts, tmp_path / "out" / "m.jsonl")
    assert read_manifest(path) == utts
    with pytest.raises(DataSourceError, match="bytes"):
        write_manifest([Utterance("y", b"RIFF", "Y")], tmp_path / "y.jsonl")


# ------------------------------------------------------------------------------ tables
def test_csv_detects_path_and_text_columns(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        rows = [["file_name", "transcript", "duration"], ["a.wav", "hi, you", "2"]]
        csv.writer(f).writerows(rows)
    (utt,) = load_source(str(table))
    assert (utt.audio, utt.text, utt.duration) == (str(tmp_path / "a.wav"), "hi, you", 2.0)


def test_tsv_with_configured_columns(tmp_path: Path) -> None:
    table = tmp_path / "t.tsv"
    table.write_text('wav\tnorm\tspeaker\nx.wav\tsix "inch\ts1\n', encoding="utf-8")
    config = SourceConfig(str(table), audio_column="wav", text_column="norm")
    (utt,) = load_source(config)
    assert (utt.text, utt.speaker) == ('six "inch', "s1")


def test_csv_configured_column_missing_lists_columns(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("path,text\na.wav,hi\n", encoding="utf-8")
    with pytest.raises(DataSourceError, match="no text column 'label'.*path, text"):
        load_source(SourceConfig(str(table), text_column="label"))


# ------------------------------------------------------------------------------ errors, specs
def test_missing_path_and_unknown_folder_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="nope.jsonl"):
        load_source(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataSourceError, match="neither a Common Voice"):
        load_source(str(tmp_path))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataSourceError, match="suffix '.txt'"):
        load_source(str(tmp_path / "x.txt"))


def test_parse_spec_shorthands() -> None:
    assert parse_spec("hf:owner/name:en#test") == SourceConfig(
        "owner/name", "hf_hub", split="test", name="en"
    )
    assert parse_spec("cv/en#dev") == SourceConfig("cv/en", split="dev")
    config = SourceConfig("x.jsonl", "manifest")
    assert parse_spec(config) is config
    with pytest.raises(ConfigError, match="source kind must be one of"):
        SourceConfig("x.jsonl", "jsonl")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ Common Voice
@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A tiny Common Voice release: mp3 clips made from FSDD, one TSV row whose clip is gone."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to make mp3 clips")
    root = tmp_path_factory.mktemp("cv") / "en"
    (root / "clips").mkdir(parents=True)
    index = 0
    for split, sentences in CV_SENTENCES.items():
        rows = []
        for sentence in sentences:
            name = f"common_voice_en_{index}.mp3"
            src = _fsdd_wav(shared_data, index)
            cmd = ["ffmpeg", "-loglevel", "error", "-i", str(src), str(root / "clips" / name)]
            subprocess.run(cmd, check=True)
            rows.append([f"client{index % 2}", name, sentence, "2", "0", "", "", "", "", "en", ""])
            index += 1
        if split == "train":  # listed, but its clip was never downloaded
            rows.append(["client9", "common_voice_en_999.mp3", "Gone", "2", "0"] + [""] * 6)
        lines = ["\t".join(CV_HEADER)] + ["\t".join(row) for row in rows]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_common_voice_reads_every_split_with_quotes_intact(cv_folder: Path) -> None:
    for split, sentences in CV_SENTENCES.items():
        loaded = read_source(f"{cv_folder}#{split}")
        assert [u.text for u in loaded.utterances] == sentences
        assert all(Path(u.audio).parent == cv_folder / "clips" for u in loaded.utterances)
    train = load_source(str(cv_folder))  # default split: train
    assert [u.speaker for u in train] == ["client0", "client1", "client0"]
    assert load_audio(train[0].audio).size > 0  # the mp3 clip decodes


def test_common_voice_counts_missing_clips(
    cv_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = read_source(SourceConfig(str(cv_folder), split="train"))
    assert loaded.skipped == {"clip missing": ["common_voice_en_999.mp3"]}
    assert loaded.skipped_count == 1
    with caplog.at_level("WARNING"):
        assert len(load_source(str(cv_folder))) == 3
    assert "skipped 1 rows (clip missing)" in caplog.text


def test_common_voice_split_tsv_directly_and_unknown_split(cv_folder: Path) -> None:
    (utt,) = load_source(str(cv_folder / "dev.tsv"))
    assert utt.text == CV_SENTENCES["dev"][0]
    with pytest.raises(DataSourceError, match="available splits: train, dev, test"):
        load_source(f"{cv_folder}#validated")


# ------------------------------------------------------------------------------ HF datasets
def _save_hf_dataset(folder: Path, wavs: list[Path]) -> None:
    """Train/test splits with the audio embedded, as Hub datasets store it."""
    import datasets

    def rows(paths: list[Path]) -> dict[str, list]:
        audio = [{"bytes": p.read_bytes(), "path": str(p)} for p in paths]
        return {"audio": audio, "text": [p.stem.upper() for p in paths]}

    splits = {"train": wavs[:2], "test": wavs[2:]}
    dataset = datasets.DatasetDict(
        {name: datasets.Dataset.from_dict(rows(paths)) for name, paths in splits.items()}
    )
    # The {bytes, path} struct cast to Audio as Hub datasets store it (no torchcodec needed).
    dataset.cast_column("audio", datasets.Audio()).save_to_disk(str(folder))


def test_hf_disk_dataset_dict_with_embedded_audio(tmp_path: Path, shared_data: Path) -> None:
    wavs = [_fsdd_wav(shared_data, i) for i in range(3)]
    _save_hf_dataset(tmp_path / "ds", wavs)
    train = load_source(str(tmp_path / "ds"))
    assert [u.text for u in train] == [w.stem.upper() for w in wavs[:2]]
    assert all(isinstance(u.audio, bytes) for u in train)
    assert train[0].id == wavs[0].name  # datasets keeps the file name of embedded audio
    assert load_audio(train[0].audio).size == load_audio(wavs[0]).size
    (test,) = load_source(f"{tmp_path / 'ds'}#test")
    assert test.audio == wavs[2].read_bytes()
    with pytest.raises(DataSourceError, match="no split 'dev'.*train, test"):
        load_source(f"{tmp_path / 'ds'}#dev")
    with pytest.raises(DataSourceError, match="no text column 'label'.*audio, text"):
        load_source(SourceConfig(str(tmp_path / "ds"), text_column="label"))


def test_hf_disk_paths_and_parquet_streaming(tmp_path: Path, shared_data: Path) -> None:
    import datasets

    wavs = [_fsdd_wav(shared_data, i) for i in range(3)]
    # A plain column of paths (no Audio feature), relative ones resolved against the folder.
    paths = datasets.Dataset.from_dict({"path": [str(wavs[0]), "clip.wav"], "sentence": ["A", "B"]})
    paths.save_to_disk(str(tmp_path / "ds"))
    assert [u.audio for u in load_source(str(tmp_path / "ds"))] == [
        str(wavs[0]),
        str(tmp_path / "ds" / "clip.wav"),
    ]
    _save_hf_dataset(tmp_path / "emb", wavs)
    datasets.load_from_disk(str(tmp_path / "emb"))["train"].to_parquet(str(tmp_path / "t.parquet"))
    streamed = list(iter_source(SourceConfig(str(tmp_path / "t.parquet"), streaming=True)))
    assert [u.audio for u in streamed] == [w.read_bytes() for w in wavs[:2]]


def test_hub_offline_is_explained_not_a_traceback() -> None:
    # conftest sets HF_HUB_OFFLINE=1: the Hub code path runs, and must explain itself.
    with pytest.raises(DataSourceError, match="offline") as info:
        load_source("hf:mozilla-foundation/common_voice_17_0:en#train")
    assert "no longer served from the HF Hub" in str(info.value)
    with pytest.raises(DataSourceError, match="could not reach the Hugging Face Hub"):
        list(iter_source(SourceConfig("owner/name", "hf_hub", streaming=True)))


def test_a_json_list_manifest_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "list.json"
    path.write_bytes(b'[{"audio_filepath": "a.wav", "text": "caf\xe9"}]')  # Latin-1
    with pytest.raises(DataSourceError, match=r"cannot read manifest .*list.json"):
        read_manifest(path)
