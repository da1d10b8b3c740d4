"""CTC collation with real feature extractors on real AN4 speech."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import (
    ParakeetFeatureExtractor,
    SeamlessM4TFeatureExtractor,
    Wav2Vec2FeatureExtractor,
)

from asr_lightning.data.collate import LABEL_PAD_ID
from asr_lightning.data.spec_augment import FILL_VALUE, SpecAugmentOptions
from asr_lightning.errors import ConfigError
from asr_lightning.model.features import collator


# Stand-ins with the attributes of asr_lightning.data.dataset.Example / Skipped.
@dataclass
class Example:
    id: str
    audio: np.ndarray
    labels: list[int]
    text: str
    speaker: str | None = None
    audio_path: str | None = None
    seed: tuple[int, ...] | None = None


@dataclass
class Skipped:
    id: str
    reason: str
    text: str = ""
    speaker: str | None = None
    audio_path: str | None = None
    duration: float | None = None


@pytest.fixture(scope="module")
def examples(shared_data: Path) -> list[Example]:
    """Three AN4 utterances of different lengths (16 kHz NIST SPHERE)."""
    paths = sorted((shared_data / "an4" / "wav" / "an4_clstk").glob("*/*.sph"))[:3]
    items = []
    for number, path in enumerate(paths):
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == 16_000
        labels = list(range(3, 3 + 2 * number + 1))
        items.append(Example(path.stem, audio, labels, path.stem, path.parent.name, str(path)))
    assert len({len(item.audio) for item in items}) == 3
    return items


def _lengths(items: list[Example]) -> list[int]:
    return [len(item.audio) for item in items]


def _check_labels_and_meta(batch: dict, items: list[Example]) -> None:
    labels = batch["labels"]
    assert labels.dtype == torch.long
    assert labels.shape == (len(items), max(len(item.labels) for item in items))
    for row, item in zip(labels.tolist(), items, strict=True):
        assert row[: len(item.labels)] == item.labels
        assert set(row[len(item.labels) :]) <= {LABEL_PAD_ID}
    assert batch["ids"] == [item.id for item in items]
    assert batch["texts"] == [item.text for item in items]
    assert batch["input_lengths"].tolist() == _lengths(items)


@pytest.mark.parametrize("return_attention_mask", [True, False])
def test_wav2vec2_batch_pads_normalizes_and_masks(
    examples: list[Example], return_attention_mask: bool
) -> None:
    # wav2vec2-base-960h's extractor has return_attention_mask=False: the mask comes anyway.
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=return_attention_mask)
    batch = collator(extractor)([*examples, Skipped("broken", "decode failed: x")])
    lengths = _lengths(examples)
    values, mask = batch["input_values"], batch["attention_mask"]
    assert values.shape == (3, max(lengths)) and values.dtype == torch.float32
    assert mask.dtype == torch.long and mask.sum(1).tolist() == lengths
    for row, length in enumerate(lengths):
        real = values[row, :length].double()
        assert abs(real.mean().item()) < 1e-3 and abs(real.std().item() - 1) < 1e-2
        assert not values[row, length:].any()  # padding is silence, not normalized noise
    _check_labels_and_meta(batch, examples)
    assert batch["skipped"] == [("broken", "decode failed: x")]


def test_parakeet_batch_has_frame_features_and_frame_mask(examples: list[Example]) -> None:
    extractor = ParakeetFeatureExtractor()
    batch = collator(extractor)(examples)
    features, mask = batch["input_features"], batch["attention_mask"]
    assert features.dim() == 3 and features.shape[0] == 3 and features.shape[2] == 80
    assert mask.shape == features.shape[:2] and mask.dtype == torch.long
    frames = [length // extractor.hop_length for length in _lengths(examples)]
    assert mask.sum(1).tolist() == frames
    for row, count in enumerate(frames):
        assert not features[row, count:].any()
    _check_labels_and_meta(batch, examples)


def test_w2v_bert_extractor_gives_stacked_features(examples: list[Example]) -> None:
    batch = collator(SeamlessM4TFeatureExtractor())(examples[:2])
    features, mask = batch["input_features"], batch["attention_mask"]
    assert features.shape[0] == 2 and features.shape[2] == 160  # 80 mel bins x stride 2
    assert mask.shape == features.shape[:2] and mask.dtype == torch.long
    assert mask.sum(1)[0] != mask.sum(1)[1]


@pytest.mark.parametrize(
    ("extractor", "name", "trailing"),
    [
        (Wav2Vec2FeatureExtractor(), "input_values", ()),
        (ParakeetFeatureExtractor(), "input_features", (80,)),
    ],
)
def test_all_skipped_gives_a_batch_of_zero_rows(extractor, name: str, trailing: tuple) -> None:
    collate = collator(extractor)
    for items in ([Skipped("a", "too long"), Skipped("b", "decode failed")], []):
        batch = collate(items)
        assert batch[name].shape == (0, 0, *trailing)
        assert batch["attention_mask"].shape == (0, 0)
        assert batch["input_lengths"].shape == (0,)
        assert batch["labels"].shape == (0, 0) and batch["labels"].dtype == torch.long
        assert batch["ids"] == batch["texts"] == []
        assert batch["skipped"] == [(item.id, item.reason) for item in items]


def test_empty_audio_and_empty_labels(examples: list[Example]) -> None:
    empty = Example("silent", np.zeros(0, dtype=np.float32), [5], "x")
    unlabelled = Example("nolabel", examples[0].audio, [], "")
    batch = collator(Wav2Vec2FeatureExtractor())([empty, unlabelled])
    assert batch["skipped"] == [("silent", "empty audio")]
    assert batch["ids"] == ["nolabel"]
    assert batch["labels"].shape == (1, 0)


def test_every_item_brings_its_duration_speaker_and_file(examples: list[Example]) -> None:
    broken = Skipped("broken", "decode failed: x", "HELLO", "fjlp", "/x/broken.wav", 1.5)
    batch = collator(Wav2Vec2FeatureExtractor())([*examples, broken, Skipped("bare", "x")])
    assert batch["details"] == [
        {"duration_s": round(len(e.audio) / 16_000, 3), "speaker": e.speaker, "audio": e.audio_path}
        for e in examples
    ]
    assert batch["skipped_details"] == [
        {"duration_s": 1.5, "speaker": "fjlp", "audio": "/x/broken.wav"},
        {"duration_s": None, "speaker": None, "audio": None},
    ]
    assert collator(Wav2Vec2FeatureExtractor())([broken])["skipped_details"][0]["speaker"] == "fjlp"


def test_bad_configuration_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="8000 Hz"):
        collator(Wav2Vec2FeatureExtractor(sampling_rate=8000))


def _seeded(examples: list[Example], epoch: int) -> list[Example]:
    return [replace(e, seed=(42, epoch, index)) for index, e in enumerate(examples)]


def test_spec_augment_masks_only_the_valid_frames_of_a_training_batch(examples) -> None:
    extractor = ParakeetFeatureExtractor()
    clean = collator(extractor)(_seeded(examples, 0))
    masked = collator(extractor, SpecAugmentOptions())(_seeded(examples, 0))

    features, mask = clean["input_features"], clean["attention_mask"]
    changed = masked["input_features"] != features  # (B, T, F)
    assert torch.equal(masked["attention_mask"], mask)
    assert (masked["input_features"][changed] == FILL_VALUE).all()
    for row, count in enumerate(mask.sum(1).tolist()):
        assert changed[row, :count].any()  # each utterance got masks
        assert not masked["input_features"][row, count:].any()  # padding as the extractor left it
        whole_frames = changed[row, :count].all(dim=1).sum()
        assert 0 < whole_frames < count  # time masks: some frames, not all
    _check_labels_and_meta(masked, examples)


def test_spec_augment_masks_follow_the_items_seed_not_the_batch(examples) -> None:
    collate = collator(ParakeetFeatureExtractor(), SpecAugmentOptions())
    epoch0, again = collate(_seeded(examples, 0)), collate(_seeded(examples, 0))
    epoch1 = collate(_seeded(examples, 1))
    alone = collate(_seeded(examples, 0)[2:])  # the same item in a batch of its own

    assert torch.equal(epoch0["input_features"], again["input_features"])
    assert not torch.equal(epoch0["input_features"], epoch1["input_features"])
    frames = int(alone["attention_mask"][0].sum())
    torch.testing.assert_close(
        alone["input_features"][0, :frames], epoch0["input_features"][2, :frames]
    )


def test_spec_augment_needs_a_filter_bank_model_and_seeded_items(examples) -> None:
    with pytest.raises(ConfigError, match="input_values.*model.mask_time_prob"):
        collator(Wav2Vec2FeatureExtractor(), SpecAugmentOptions())
    with pytest.raises(ValueError, match="seed"):
        collator(ParakeetFeatureExtractor(), SpecAugmentOptions())(examples)
