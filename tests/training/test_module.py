"""CTCModule: padded batches, training, evaluation reports, export and reloading."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import lightning
import numpy as np
import pytest
import torch
from transformers import AutoModelForCTC, pipeline

from asr_lightning.decoding.greedy import greedy_decode
from asr_lightning.errors import ConfigError
from asr_lightning.model.precision import bf16_warning
from asr_lightning.training.module import CTCModule
from tests.model import tiny
from tests.training_support import cli_command, cli_env, tiny_config


@pytest.mark.parametrize("model_type", ["wav2vec2", "parakeet_ctc"])
def test_a_clip_alone_and_in_a_padded_batch_gives_the_same_transcript(model_type):
    module = tiny.scratch_module(model_type).eval()
    alone = tiny.batch_of(module, [0.4], ["abc"])
    padded = tiny.batch_of(module, [0.4, 1.0], ["abc", "cab ba"])

    with torch.no_grad():
        logits_alone, lengths_alone = module(alone)
        logits_padded, lengths_padded = module(padded)

    length = int(lengths_alone[0])
    assert int(lengths_padded[0]) == length < logits_padded.shape[1]
    torch.testing.assert_close(
        logits_padded[0, :length], logits_alone[0, :length], atol=1e-4, rtol=1e-4
    )
    assert (
        module.transcribe(logits_padded, lengths_padded)[0]
        == module.transcribe(logits_alone, lengths_alone)[0]
    )
    if model_type == "wav2vec2":  # a random model emits characters on padding frames too
        assert module.transcribe(logits_alone, lengths_alone)[0]
        naive = greedy_decode(
            logits_padded,
            torch.full_like(lengths_padded, 10**9).clamp(max=logits_padded.shape[1]),
            module.blank_id,
        )
        assert naive[0] != greedy_decode(logits_alone, lengths_alone, module.blank_id)[0]


def test_a_group_norm_wav2vec2_gets_the_mask_and_is_padding_exact():
    """wav2vec2-base's group norm saw the padding: the guard takes it off, and the mask is
    passed so the transformer does not attend to padding either."""
    module = tiny.scratch_module(config_overrides=tiny.WAV2VEC2_GROUP_NORM).eval()
    seen = {}
    module.model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    alone = tiny.batch_of(module, [0.4], ["abc"])
    padded = tiny.batch_of(module, [0.4, 1.0], ["abc", "cab ba"])

    with torch.no_grad():
        logits_alone, lengths = module(alone)
        logits_padded, _ = module(padded)

    assert "attention_mask" in seen
    valid = int(lengths[0])
    torch.testing.assert_close(logits_padded[0, :valid], logits_alone[0, :valid], atol=1e-5, rtol=0)


def test_an_inexact_family_is_evaluated_one_row_at_a_time(monkeypatch):
    module = tiny.scratch_module().eval()
    padded = tiny.batch_of(module, [0.4, 1.0], ["abc", "cab ba"])
    calls = []
    module.model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs["input_values"].shape), with_kwargs=True
    )
    monkeypatch.setattr("asr_lightning.training.module.padding_exact", lambda model_type: False)

    with torch.no_grad():
        logits, lengths = module(padded)
        module.train()
        module(padded)  # training batches stay padded

    lengths_in_samples = padded["input_lengths"].tolist()
    assert calls == [
        torch.Size([1, lengths_in_samples[0]]),
        torch.Size([1, lengths_in_samples[1]]),
        padded["input_values"].shape,
    ]
    assert logits.shape[1] >= int(lengths.max())


@pytest.mark.parametrize("model_type", ["wav2vec2", "parakeet_ctc"])
def test_a_few_steps_lower_the_loss(model_type, tmp_path):
    module = tiny.scratch_module(
        model_type, learning_rate=3e-3, scheduler="constant", warmup_ratio=0.0
    )
    batch = tiny.batch_of(module, [0.3, 0.5])
    module.eval()
    with torch.no_grad():
        before = module._loss(*module(batch), batch["labels"]).item()

    module.train()
    tiny.trainer(tmp_path, max_steps=5).fit(module, tiny.loader(*[batch] * 5))

    module.eval()
    with torch.no_grad():
        after = module._loss(*module(batch), batch["labels"]).item()
    assert np.isfinite(after) and after < before


def test_the_head_gets_its_own_learning_rate(tmp_path):
    module = tiny.scratch_module(
        learning_rate=1e-4, head_learning_rate=1e-2, scheduler="constant", warmup_ratio=0.0
    )
    trainer = tiny.trainer(tmp_path, max_steps=1)
    trainer.fit(module, tiny.loader(tiny.batch_of(module, [0.3])))

    head = {id(p) for p in module.model.lm_head.parameters()}
    for group in trainer.optimizers[0].param_groups:
        is_head = {id(p) in head for p in group["params"]}
        assert is_head == {group["name"].startswith("head")}
        assert group["lr"] == (1e-2 if group["name"].startswith("head") else 1e-4)


@pytest.mark.parametrize("horizon", ["budget", "steps"])
def test_a_budget_schedule_anneals_by_the_time_limit_whatever_the_step_count(horizon, tmp_path):
    class Rates(lightning.Callback):
        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_train_batch_end(self, trainer, *args) -> None:
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = tiny.scratch_module(
        learning_rate=1e-3, scheduler="linear", warmup_ratio=0.0, schedule_horizon=horizon
    )
    rates = Rates()
    batch = tiny.batch_of(module, [0.3])
    trainer = tiny.trainer(tmp_path, max_epochs=100_000, max_time={"seconds": 4}, callbacks=[rates])
    trainer.fit(module, tiny.loader(*[batch] * 10))

    assert trainer.global_step < 100_000 * 10  # the time limit stopped it
    assert len(rates.seen) >= 3
    if horizon == "budget":  # decays with the clock, to ~0 at the limit
        assert all(a >= b for a, b in zip(rates.seen, rates.seen[1:], strict=False))
        assert rates.seen[-1] < 0.15e-3 < 0.5e-3 < rates.seen[0]
    else:  # sized for 100,000 epochs: still at its peak when the clock stops it
        assert rates.seen[-1] > 0.99e-3


def test_validation_and_test_log_error_rates_and_write_transcripts(tmp_path):
    module = tiny.scratch_module()
    batch = tiny.batch_of(module, [0.3, 0.5])
    trainer = tiny.trainer(tmp_path, max_steps=1)
    trainer.fit(module, tiny.loader(batch), tiny.loader(batch))
    assert {"train/loss", "val/loss", "val/wer", "val/cer"} <= set(trainer.callback_metrics)

    trainer.test(module, tiny.loader(batch))

    assert {"test/loss", "test/wer", "test/cer"} <= set(trainer.callback_metrics)
    lines = (tmp_path / "predictions" / "test_0.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == batch["ids"]
    assert records[0]["reference"] == "abc"
    assert set(records[0]) >= {"hypothesis", "word_errors", "ref_words", "char_errors"}
    assert all(0.0 <= r["confidence"] <= 1.0 for r in records)


def test_several_validation_sets_are_logged_by_name(tmp_path):
    import lightning

    module = tiny.scratch_module()
    batch = tiny.batch_of(module, [0.3, 0.5])

    class Data(lightning.LightningDataModule):
        val_set_names = ["clean", "noisy"]

        def val_dataloader(self):
            return [tiny.loader(batch), tiny.loader(batch)]

    tiny.trainer(tmp_path).validate(module, datamodule=Data())

    metrics = module.trainer.callback_metrics
    assert {"val/clean/wer", "val/noisy/wer", "val/clean/loss", "val/wer", "val/loss"} <= set(
        metrics
    )
    assert metrics["val/wer"] == metrics["val/clean/wer"]


def test_predict_returns_transcripts_by_id(tmp_path):
    module = tiny.scratch_module()
    batch = tiny.batch_of(module, [0.3, 0.5])

    (predictions,) = tiny.trainer(tmp_path).predict(module, tiny.loader(batch))

    assert [p["id"] for p in predictions] == ["utt0", "utt1"]
    assert all(isinstance(p["hypothesis"], str) for p in predictions)
    assert (tmp_path / "predictions" / "predict_0.jsonl").is_file()


def test_blank_only_transcripts_raise_a_loud_warning_not_an_error(tmp_path):
    module = tiny.scratch_module(blank_warning_patience=2)
    with torch.no_grad():  # a head that always prefers the blank
        module.model.lm_head.bias[module.blank_id] = 1e4
    batch = tiny.batch_of(module, [0.3])
    trainer = tiny.trainer(tmp_path)

    trainer.validate(module, tiny.loader(batch))
    with pytest.warns(UserWarning, match="only blanks.*learning rate.*vocabulary"):
        trainer.validate(module, tiny.loader(batch))


def test_a_batch_with_every_item_skipped_is_skipped_and_counted(tmp_path, caplog):
    module = tiny.scratch_module(scheduler="constant", warmup_ratio=0.0)
    good = tiny.batch_of(module, [0.3])
    good["skipped"] = [("bad1", "undecodable")]
    empty = tiny.batch_of(module, [0.3])
    empty = {**{k: v[:0] for k, v in empty.items()}, "skipped": [("bad2", "empty audio")]}
    trainer = tiny.trainer(tmp_path, max_steps=2, log_every_n_steps=1)

    with caplog.at_level(logging.WARNING):
        trainer.fit(module, tiny.loader(empty, good))

    assert "every item of training batch 0 was skipped" in caplog.text
    assert trainer.callback_metrics["data/skipped"] == 2


def test_save_hf_loads_in_transformers_and_the_asr_pipeline(tmp_path):
    module = tiny.scratch_module().eval()
    batch = tiny.batch_of(module, [0.5], ["abc"])
    audio = tiny.clip(0.5, seed=0)  # the clip of that batch
    folder = module.save_hf(tmp_path / "hf")

    model = AutoModelForCTC.from_pretrained(folder)
    text = pipeline("automatic-speech-recognition", model=str(folder))(audio)["text"]

    with torch.no_grad():
        logits, lengths = module(batch)
        torch.testing.assert_close(model(batch["input_values"]).logits, logits)
    # the pipeline keeps a space per word delimiter; our decoder joins words by one space
    assert text and " ".join(text.split()) == module.transcribe(logits, lengths)[0]
    assert (folder / "model.safetensors").is_file()


def test_a_saved_folder_is_a_pretrained_model_to_fine_tune_again(tmp_path):
    module = tiny.scratch_module().eval()
    folder = module.save_hf(tmp_path / "hf")
    batch = tiny.batch_of(module, [0.3, 0.5])

    again = CTCModule(model_name_or_path=str(folder), vocab=tiny.VOCAB, warmup_ratio=0.0)
    again.configure_model()
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(batch)[0], module(batch)[0])
    frozen = [p.requires_grad for p in again.model.wav2vec2.feature_extractor.parameters()]
    assert frozen and not any(frozen)  # fine-tuning freezes the feature encoder by default

    again.train()
    tiny.trainer(tmp_path, max_steps=2).fit(again, tiny.loader(batch, batch))


def test_a_checkpoint_restores_the_model(tmp_path):
    module = tiny.scratch_module(learning_rate=1e-2, warmup_ratio=0.0)
    batch = tiny.batch_of(module, [0.3])
    trainer = tiny.trainer(tmp_path, max_steps=2)
    trainer.fit(module, tiny.loader(batch, batch))
    trainer.save_checkpoint(tmp_path / "last.ckpt")

    restored = CTCModule.load_from_checkpoint(tmp_path / "last.ckpt").eval()

    with torch.no_grad():
        torch.testing.assert_close(restored(batch)[0], module.eval()(batch)[0])


def test_a_checkpoint_of_another_vocabulary_is_refused_naming_it_and_the_fix(tmp_path):
    module = tiny.scratch_module(warmup_ratio=0.0)
    batch = tiny.batch_of(module, [0.3])
    trainer = tiny.trainer(tmp_path, max_steps=1)
    trainer.fit(module, tiny.loader(batch))
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    other = tiny.scratch_module(vocab={"<pad>": 0, "<unk>": 1, "|": 2, "x": 3, "y": 4})

    with pytest.raises(ConfigError, match=r"last\.ckpt does not fit .*config\.yaml") as error:
        tiny.trainer(tmp_path).test(other, tiny.loader(batch), ckpt_path=ckpt)
    assert "lm_head.weight" in str(error.value)


def test_training_settings_reach_the_model_configuration():
    module = tiny.scratch_module(
        mask_time_prob=0.3, mask_feature_prob=0.1, layerdrop=0.0, gradient_checkpointing=True
    )

    config = module.model.config
    assert (config.mask_time_prob, config.mask_feature_prob, config.layerdrop) == (0.3, 0.1, 0.0)
    assert any(getattr(m, "gradient_checkpointing", False) for m in module.model.modules())


def test_a_different_vocabulary_gets_a_new_head(tmp_path, caplog):
    folder = tiny.scratch_module().save_hf(tmp_path / "hf")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, "x": 3, "y": 4}

    module = CTCModule(model_name_or_path=str(folder), vocab=vocab)
    with caplog.at_level(logging.WARNING):
        module.configure_model()

    assert module.model.lm_head.out_features == len(vocab)
    assert module.tokenizer.get_vocab() == vocab
    assert "new CTC head" in caplog.text


def test_freezing_a_parakeet_freezes_its_subsampling_front_end():
    module = tiny.scratch_module("parakeet_ctc", freeze_feature_encoder=True)
    frozen = {name for name, p in module.model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith("encoder.subsampling.") for name in frozen)
    assert all(p.requires_grad for p in tiny.scratch_module("parakeet_ctc").model.parameters())


def test_from_scratch_the_feature_encoder_trains_unless_frozen():
    assert all(p.requires_grad for p in tiny.scratch_module().model.parameters())
    frozen = tiny.scratch_module(freeze_feature_encoder=True).model.wav2vec2.feature_extractor
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mask_time_prob": 0.05}, "mask_time_prob.*parakeet_ctc.*data.spec_augment"),
        ({"config_overrides": {"hiden_size": 8}}, "Did you mean hidden_size"),
    ],
)
def test_settings_a_parakeet_model_lacks_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        tiny.scratch_module("parakeet_ctc", **settings)


def test_a_model_from_scratch_needs_an_architecture_and_a_vocabulary():
    with pytest.raises(ConfigError, match="model_type"):
        CTCModule(model_name_or_path=None)
    with pytest.raises(ConfigError, match="vocab"):
        CTCModule(model_name_or_path=None, model_type="wav2vec2").configure_model()


class _ModeProbe(lightning.Callback):
    """Records the model's mode in each training and validation step, and whether two forward
    passes of the same batch differ there (dropout and SpecAugment on, or off)."""

    def __init__(self) -> None:
        self.train_steps: list[tuple[bool, bool]] = []
        self.val_steps: list[tuple[bool, bool]] = []

    def _probe(self, pl_module, batch) -> tuple[bool, bool]:
        modes = {module.training for module in pl_module.model.modules()}
        with torch.no_grad():
            first, second = pl_module(batch)[0], pl_module(batch)[0]
        return modes == {True} if pl_module.training else modes == {False}, not torch.equal(
            first, second
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train_steps.append(self._probe(pl_module, batch))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_steps.append(self._probe(pl_module, batch))


def test_a_pretrained_folder_trains_in_train_mode_after_every_validation(tmp_path, recwarn):
    """``from_pretrained`` returns eval mode, which Lightning would keep through training."""
    tiny.scratch_module().save_hf(tmp_path / "hf")
    module = CTCModule(
        model_name_or_path=str(tmp_path / "hf"), mask_time_prob=0.5, mask_time_length=2
    )
    module.configure_model()
    assert not module.model.training  # as from_pretrained returns it
    batch = tiny.batch_of(module, [0.6, 0.8])
    probe = _ModeProbe()
    trainer = tiny.trainer(tmp_path, max_steps=4, val_check_interval=2, callbacks=[probe])

    trainer.fit(module, tiny.loader(*[batch] * 4), tiny.loader(batch))

    assert module.model.config.mask_time_prob == 0.5
    assert probe.train_steps == [(True, True)] * 4  # in train mode, and masking/dropout on
    assert probe.val_steps == [(True, False)] * 2  # in eval mode, and deterministic
    assert not [w for w in recwarn if "eval mode" in str(w.message)]


#: Makes this process's oneDNN and ATen kernels those of an AVX2-only CPU (no native bf16).
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_bf16_on_a_cpu_that_emulates_it_is_warned_with_its_measured_cost(tmp_path):
    config = tiny_config(tmp_path, train=8, evaluation=4, trainer={"max_steps": 1})
    command = cli_command("fit", "--config", str(config), "--trainer.precision", "bf16-mixed")
    done = subprocess.run(
        command, env={**cli_env(), **AVX2_ONLY}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    slowdown = re.search(r"bf16 is emulated here .* took ([\d.]+)x as long in bf16", done.stderr)
    assert slowdown and float(slowdown.group(1)) > 1.5
    assert "--trainer.precision 32-true" in done.stderr


def test_mixed_precision_with_gradient_clipping_trains(tmp_path):
    """configs/cv17.yaml clips gradients under 16-mixed: Lightning refuses to clip for a fused
    optimizer under mixed precision, so such a run must get the unfused AdamW, not a crash."""
    config = tiny_config(
        tmp_path, train=8, evaluation=4, trainer={"max_steps": 2, "gradient_clip_val": 1.0}
    )
    command = cli_command("fit", "--config", str(config), "--trainer.precision", "bf16-mixed")
    done = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "does not allow for gradient clipping" not in done.stderr


def test_bf16_where_it_is_fast_or_fp32_is_not_warned(monkeypatch):
    assert bf16_warning("32-true", 32) is None
    monkeypatch.setattr("asr_lightning.model.precision.bf16_slowdown", lambda hidden: 0.2)
    assert bf16_warning("bf16-mixed", 32) is None


def test_a_family_without_a_convolutional_front_end_refuses_to_freeze_one(tmp_path):
    tiny.save_encoder_folder("wav2vec2-bert", tmp_path / "w2v-bert")
    module = CTCModule(
        model_name_or_path=str(tmp_path / "w2v-bert"), vocab=tiny.VOCAB, freeze_feature_encoder=True
    )
    with pytest.raises(ConfigError, match="no convolutional front end"):
        module.configure_model()
    default = CTCModule(model_name_or_path=str(tmp_path / "w2v-bert"), vocab=tiny.VOCAB)
    default.configure_model()  # None: nothing to freeze, everything trains
    assert all(p.requires_grad for p in default.model.parameters())
