"""ASRDataModule on real files: bad audio, vocabulary, levels, augmentation, sets, batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_lightning.audio.augment import AugmentConfig
from asr_lightning.audio.decode import load_audio
from asr_lightning.data.prepare import prepare_an4
from asr_lightning.data.spec_augment import FILL_VALUE, SpecAugmentOptions
from asr_lightning.errors import ConfigError, VocabularyError
from asr_lightning.text.vocab import build_vocab
from asr_lightning.training.datamodule import ASRDataModule
from tests.fixtures.bad_audio import make_bad_audio_corpus
from tests.model import tiny
from tests.training_support import write_manifest

#: From scratch (no download): a wav2vec2 feature extractor and a vocabulary built from data.
SCRATCH = {"model_type": "wav2vec2", "duration_cache": None, "num_workers": 0}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _batches(loader) -> tuple[list[str], list[tuple[str, str]]]:
    """Ids of the examples and ``(id, reason)`` of the skipped items of a whole epoch."""
    seen, skipped = [], []
    for batch in loader:
        seen += batch["ids"]
        skipped += batch["skipped"]
    return seen, skipped


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore:PySoundFile failed")
def test_bad_audio_is_decoded_or_skipped_and_counted_never_lost(tmp_path):
    cases = make_bad_audio_corpus(tmp_path / "bad")
    rows = [
        {"audio_filepath": str(c.path), "text": "hello world", "id": n} for n, c in cases.items()
    ]
    rows.append({"audio_filepath": str(tmp_path / "missing.wav"), "text": "gone", "id": "missing"})
    good = _rows(write_manifest(tmp_path / "good.jsonl", "train", 6))
    rows += [{**row, "id": f"good{i}"} for i, row in enumerate(good)]
    manifest = _write_rows(tmp_path / "train.jsonl", rows)
    data = ASRDataModule(
        train=str(manifest), min_duration_s=0.5, batch_size=3, max_batch_seconds=None,
        **{**SCRATCH, "num_workers": 2},
    )  # fmt: skip

    data.setup("fit")
    seen, skipped = _batches(data.train_dataloader())

    report = data.reports["train/train"]
    kept = {item.id for item in data.datasets["train"]["train"].items}
    assert report.total == len(rows) and report.kept == len(kept)
    assert report.kept + report.dropped_total == report.total  # dropped at setup, with reasons
    assert len(seen) + len(skipped) == len(kept)  # at load time: decoded, or skipped with a reason
    assert set(seen) | {uid for uid, _ in skipped} == kept
    assert all(reason.startswith("decode failed") for _, reason in skipped)
    assert {"nan_samples", "inf_samples"} <= {uid for uid, _ in skipped}  # valid headers
    assert report.dropped["too long"] == 1  # ten_minutes
    skipped_ids = {uid for uid, _ in skipped}
    for name, case in cases.items():
        if case.decodes and name != "ten_minutes":
            assert name in seen, name
        elif not case.decodes:  # dropped at setup (header) or skipped at load time
            assert name not in seen and (name not in kept or name in skipped_ids), name
    assert "missing" not in kept and {f"good{i}" for i in range(6)} <= set(seen)


def test_the_vocabulary_comes_from_the_training_transcripts_only(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", "train", 4, text="abc cab")
    validation = write_manifest(tmp_path / "val.jsonl", "validation", 4, text="xyz abc")
    data = ASRDataModule(train=str(train), validation=str(validation), **SCRATCH)

    assert data.vocab == build_vocab(["abc cab"])
    data.setup("fit")
    validation_texts = {item.text for item in data.datasets["validation"]["validation"].items}
    assert validation_texts == {"abc"}  # what the vocabulary cannot spell is dropped


PRETRAINED = {"duration_cache": None, "num_workers": 0}


def test_a_checkpoint_without_a_tokenizer_gets_a_vocabulary_from_the_transcripts(tmp_path):
    tiny.save_encoder_folder("wav2vec2", tmp_path / "encoder")  # like facebook/wav2vec2-base
    train = write_manifest(tmp_path / "train.jsonl", "train", 4, text="Abc, cab!")

    data = ASRDataModule(train=str(train), processor=str(tmp_path / "encoder"), **PRETRAINED)

    assert data.vocab == build_vocab(["Abc cab"])  # normalized as from scratch
    assert data.tokenizer.get_vocab() == data.vocab
    data.setup("fit")
    assert {item.text for item in data.datasets["train"]["train"].items} == {"Abc cab"}


def test_vocab_from_data_replaces_the_vocabulary_of_a_checkpoint(tmp_path):
    folder = tiny.scratch_module().save_hf(tmp_path / "hf")  # spells a, b, c, d
    train = write_manifest(tmp_path / "train.jsonl", "train", 4, text="xyz")

    own = ASRDataModule(train=str(train), processor=str(folder), **PRETRAINED)
    assert own.vocab == tiny.VOCAB
    with pytest.raises(VocabularyError, match="data.vocab_from_data: true"):
        own.setup("fit")

    data = ASRDataModule(
        train=str(train), processor=str(folder), vocab_from_data=True, **PRETRAINED
    )
    assert data.vocab == build_vocab(["xyz"]) and data.tokenizer.get_vocab() == data.vocab
    data.setup("fit")
    assert len(data.datasets["train"]["train"]) == 4


def test_a_vocabulary_from_data_needs_training_data(tmp_path):
    tiny.save_encoder_folder("wav2vec2", tmp_path / "encoder")
    data = ASRDataModule(processor=str(tmp_path / "encoder"), **PRETRAINED)
    with pytest.raises(ConfigError, match="has no tokenizer.*needs data.train"):
        _ = data.vocab


def test_level_normalization_applies_to_every_split(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", "train", 3)
    validation = write_manifest(tmp_path / "val.jsonl", "validation", 3)
    data = ASRDataModule(train=str(train), validation=str(validation), level="rms", **SCRATCH)
    data.setup("fit")

    for split in ("train", "validation"):
        dataset = data.datasets[split][split]
        for index, item in enumerate(dataset.items):
            raw = load_audio(item.audio)
            level = np.sqrt(np.mean(dataset[index].audio.astype(np.float64) ** 2))
            assert 20 * np.log10(level) == pytest.approx(-20.0, abs=0.5)
            assert not np.allclose(raw, dataset[index].audio)


def test_augmentation_is_train_only_and_a_function_of_seed_epoch_and_index(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", "train", 6)
    validation = write_manifest(tmp_path / "val.jsonl", "validation", 2)
    augment = AugmentConfig(gain_prob=1.0, speed_factors=(0.9, 1.1))
    settings = {"train": str(train), "validation": str(validation), "augment": augment}
    data = ASRDataModule(**settings, batch_size=2, max_batch_seconds=None, **SCRATCH)
    data.setup("fit")
    dataset, evaluation = data.datasets["train"]["train"], data.datasets["validation"]["validation"]

    first = dataset[(1, 0)].audio
    np.testing.assert_array_equal(dataset[(1, 0)].audio, first)
    assert first.shape != dataset[(1, 1)].audio.shape or not np.allclose(
        first, dataset[(1, 1)].audio
    )
    clean = load_audio(evaluation.items[0].audio)
    np.testing.assert_array_equal(evaluation[(0, 3)].audio, clean)  # validation: never augmented

    # the same augmented batches with 0 and 2 workers, and from another module with the seed
    other = ASRDataModule(
        **settings, batch_size=2, max_batch_seconds=None, **{**SCRATCH, "num_workers": 2}
    )
    other.setup("fit")
    for a, b in zip(data.train_dataloader(), other.train_dataloader(), strict=True):
        assert a["ids"] == b["ids"]
        np.testing.assert_array_equal(a["input_values"].numpy(), b["input_values"].numpy())


def _features_by_id(loader) -> dict[str, torch.Tensor]:
    """Each utterance's valid frames (T_i, F) over an epoch of a filter-bank loader."""
    found = {}
    for batch in loader:
        for row, uid in enumerate(batch["ids"]):
            frames = int(batch["attention_mask"][row].sum())
            found[uid] = batch["input_features"][row, :frames]
    return found


def test_spec_augment_masks_training_batches_only_by_seed_and_epoch(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", "train", 6)
    settings = {
        "train": str(train), "validation": str(train), "test": str(train), "predict": str(train),
        "model_type": "parakeet_ctc", "duration_cache": None, "batch_size": 2,
        "max_batch_seconds": None, "spec_augment": SpecAugmentOptions(), "num_workers": 0,
    }  # fmt: skip
    data = ASRDataModule(**settings)
    data.setup("fit")
    data.setup("test")
    data.setup("predict")

    masked = _features_by_id(data.train_dataloader())
    for clean in (
        _features_by_id(data.val_dataloader()[0]),
        _features_by_id(data.test_dataloader()[0]),
        _features_by_id(data.predict_dataloader()[0]),
    ):
        assert masked.keys() <= clean.keys()
        for uid, features in masked.items():
            changed = features != clean[uid]
            assert changed.any() and (features[changed] == FILL_VALUE).all()
            assert not (clean[uid] == FILL_VALUE).all(dim=1).any()  # no masked frame in eval

    # the same masks with 2 workers and another module of the same seed; others next epoch
    other = ASRDataModule(**{**settings, "num_workers": 2})
    other.setup("fit")
    again = _features_by_id(other.train_dataloader())
    assert all(torch.equal(masked[uid], again[uid]) for uid in masked)
    loader = other.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(1)
    next_epoch = _features_by_id(loader)
    assert all(not torch.equal(masked[uid], next_epoch[uid]) for uid in masked)


def test_spec_augment_for_a_waveform_model_names_its_own_masking(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", "train", 3)
    data = ASRDataModule(train=str(train), spec_augment=SpecAugmentOptions(), **SCRATCH)
    with pytest.raises(ConfigError, match="data.spec_augment.*model.mask_time_prob"):
        data.setup("fit")
    assert data.datasets == {}  # refused before any set is read


def test_validation_sets_are_named_and_keep_what_training_would_drop(tmp_path):
    rate = 16_000
    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.sin(np.arange(int(0.3 * rate)) / 9), rate)
    long = tmp_path / "long.wav"
    sf.write(long, 0.1 * np.sin(np.arange(int(20 * rate)) / 9), rate)
    odd = [
        {"audio_filepath": str(short), "text": "a", "id": "short"},
        {"audio_filepath": str(long), "text": "a long one", "id": "long"},
    ]
    clean = write_manifest(tmp_path / "clean.jsonl", "validation", 3)
    _write_rows(tmp_path / "odd.jsonl", odd)
    _write_rows(tmp_path / "train.jsonl", _rows(clean) + odd)
    data = ASRDataModule(
        train=str(tmp_path / "train.jsonl"),
        validation={"clean": str(clean), "odd": str(tmp_path / "odd.jsonl")},
        min_duration_s=0.5,
        **SCRATCH,
    )
    data.setup("fit")

    assert data.val_set_names == ["clean", "odd"]
    loaders = data.val_dataloader()
    assert [sorted(_batches(loader)[0]) for loader in loaders] == [
        sorted(row["id"] for row in _rows(clean)),
        ["long", "short"],
    ]
    assert data.reports["train/train"].dropped == {"too short": 1, "too long": 1}
    assert data.reports["validation/odd"].kept == 2


def test_an4_batches_of_the_data_module_are_under_ten_percent_padding(tmp_path, shared_data):
    manifests = prepare_an4(shared_data / "an4", tmp_path / "an4")
    data = ASRDataModule(train=str(manifests["train"]), max_batch_seconds=60.0, **SCRATCH)
    data.setup("fit")

    sampler = data.train_dataloader().batch_sampler.sampler
    assert sampler.padding_fraction < 0.10
    assert len(data.train_dataloader()) == sampler.batches_per_epoch


def test_ctc_infeasible_transcripts_are_dropped_without_a_trainer(tmp_path):
    """The frame rate comes from the linked model settings, not from an attached module."""
    from asr_lightning.data.filters import CTC_INFEASIBLE

    long_text = "abc cab " * 12  # ~100 labels: more than a 12.5-frames/s model has frames
    rows = _rows(write_manifest(tmp_path / "a.jsonl", "train", 4))
    rows[0]["text"] = long_text
    manifest = _write_rows(tmp_path / "train.jsonl", rows)
    data = ASRDataModule(
        train=str(manifest), model_type="parakeet_ctc", model_config_overrides=tiny.PARAKEET,
        min_duration_s=0.1, duration_cache=None, num_workers=0,
    )  # fmt: skip

    assert data.output_frames_per_second == 12.5  # 10 ms hop x subsampling 8
    data.setup("fit")

    assert data.reports["train/train"].dropped[CTC_INFEASIBLE] == 1
    assert len(data.datasets["train"]["train"]) == 3


@pytest.mark.parametrize("pretrained", [False, True])
def test_a_large_source_set_up_in_processes_equals_one_process(tmp_path, monkeypatch, pretrained):
    """Training rows read for the vocabulary (from scratch) or straight from the manifest
    (a checkpoint with a tokenizer), and an evaluation manifest: split over two processes."""
    from asr_lightning.data import pipeline
    from tests.data.test_pipeline import corpus

    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 256)
    monkeypatch.setattr(pipeline, "MIN_PARALLEL_ROWS", 512)
    monkeypatch.setattr(pipeline, "SPAN_BYTES", 16 << 10)
    pools = []
    original = pipeline.run_pool
    monkeypatch.setattr(
        pipeline, "run_pool", lambda t, i, w, j: pools.append(t.__name__) or original(t, i, w, j)
    )
    train, validation = corpus(tmp_path / "train.jsonl"), corpus(tmp_path / "val.jsonl", 2000)
    settings = {"train": str(train), "validation": str(validation), "num_workers": 0}
    if pretrained:  # a checkpoint whose tokenizer spells the corpus
        spelled = ASRDataModule(train=str(train), model_type="wav2vec2", setup_workers=1).vocab
        settings["processor"] = str(tiny.scratch_module(vocab=spelled).save_hf(tmp_path / "hf"))
    else:
        settings["model_type"] = "parakeet_ctc"
    results = []
    for workers in (1, 2):
        data = ASRDataModule(
            **settings, setup_workers=workers, duration_cache=str(tmp_path / f"d{workers}.sqlite")
        )
        data.setup("fit")
        sets = {split: data.datasets[split][split].items for split in ("train", "validation")}
        results.append((data.vocab, {k: list(v) for k, v in sets.items()}, dict(data.reports)))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    assert {k: v.to_dict() for k, v in results[0][2].items()} == {
        k: v.to_dict() for k, v in results[1][2].items()
    }
    if pretrained:  # train and validation parsed in the processes
        assert pools == ["_prepare_span", "_prepare_span"]
    else:  # train parsed for the vocabulary, then its rows set up; validation parsed
        assert pools == ["_read_span", "_prepare_range", "_prepare_span"]
    validation_items = results[1][1]["validation"]
    assert len(validation_items) == 2000  # scored whole: 154 unreadable rows are kept
    assert sum(item.unreadable is not None for item in validation_items) == 154


def test_a_subword_vocabulary_is_trained_on_the_training_transcripts_only(tmp_path):
    from transformers import ParakeetTokenizer

    from asr_lightning.text.subword import make_subword_tokenizer

    train = write_manifest(tmp_path / "train.jsonl", "train", 4, text="Abc, cab!")
    validation = write_manifest(tmp_path / "val.jsonl", "validation", 4, text="xyz abc")
    data = ASRDataModule(
        train=str(train), validation=str(validation), vocab_type="bpe", vocab_size=10, **SCRATCH
    )

    assert isinstance(data.tokenizer, ParakeetTokenizer) and len(data.vocab) == 10
    assert make_subword_tokenizer(data.tokenizer_json).get_vocab() == data.vocab
    assert {"Ab", "▁c"} <= set(data.vocab) and not set("xyz") & set("".join(data.vocab))
    again = ASRDataModule(train=str(train), vocab_type="bpe", vocab_size=10, **SCRATCH)
    assert again.tokenizer_json == data.tokenizer_json  # the same transcripts, the same pieces
    data.setup("fit")
    assert {item.text for item in data.datasets["train"]["train"].items} == {"Abc cab"}
    validation_texts = {item.text for item in data.datasets["validation"]["validation"].items}
    assert validation_texts == {"abc"}  # what the vocabulary cannot spell is dropped


def test_subword_settings_that_do_not_fit_are_refused(tmp_path):
    train = write_manifest(tmp_path / "train.jsonl", "train", 4, text="abc cab")
    with pytest.raises(ConfigError, match="vocab_size goes with data.vocab_type bpe"):
        ASRDataModule(train=str(train), vocab_size=64, **SCRATCH)
    with pytest.raises(ConfigError, match="set vocab_size"):
        ASRDataModule(train=str(train), vocab_type="unigram", **SCRATCH)
    with pytest.raises(ConfigError, match="too large .*Set data.vocab_size to"):
        _ = ASRDataModule(train=str(train), vocab_type="bpe", vocab_size=500, **SCRATCH).vocab
    folder = tiny.scratch_module().save_hf(tmp_path / "hf")  # has its own tokenizer
    own = ASRDataModule(
        train=str(train), processor=str(folder), vocab_type="bpe", vocab_size=8, **PRETRAINED
    )
    with pytest.raises(ConfigError, match="has its own tokenizer: set data.vocab_from_data"):
        _ = own.vocab


def test_ctc_feasibility_counts_subword_labels(tmp_path):
    from asr_lightning.data.filters import CTC_INFEASIBLE

    rows = _rows(write_manifest(tmp_path / "a.jsonl", "train", 4))
    for row in rows:  # 47 characters, more than the ~12-37 frames of 1-3 s at 12.5 frames/s
        row["text"] = " ".join(["abc cab"] * 6)
    manifest = _write_rows(tmp_path / "train.jsonl", rows)
    settings = {
        "train": str(manifest), "model_type": "parakeet_ctc",
        "model_config_overrides": tiny.PARAKEET, "min_duration_s": 0.1,
        "duration_cache": None, "num_workers": 0,
    }  # fmt: skip

    pieces = ASRDataModule(vocab_type="bpe", vocab_size=12, **settings)
    pieces.setup("fit")  # "▁abc ▁cab" x 6: 12 labels
    assert len(pieces.datasets["train"]["train"]) == 4
    assert CTC_INFEASIBLE not in pieces.reports["train/train"].dropped
    characters = ASRDataModule(**settings)
    characters.setup("fit")
    assert characters.reports["train/train"].dropped[CTC_INFEASIBLE] == 4
