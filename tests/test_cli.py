"""The ``asr-lightning`` command: fit, validate, test, predict, print_config, errors, exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer, pipeline

from asr_lightning.audio.decode import load_audio
from asr_lightning.cli import main
from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.text.vocab import build_vocab
from asr_lightning.training.module import CTCModule
from tests.model import tiny
from tests.training_support import (
    REPO_ROOT,
    last_scalar,
    manifest_ids,
    run_cli,
    run_dirs,
    tiny_config,
    write_manifest,
)

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
#: A tiny wav2vec2 with the real model's 50 frames per second (tests/model/tiny's 1600 cost
#: seconds per step on 3 s clips), trained so little that it still emits characters (an empty
#: transcript would make the export checks vacuous).
WAV2VEC2 = {
    **tiny.WAV2VEC2,
    "conv_dim": (32,) * 3,
    "conv_kernel": (10, 8, 4),
    "conv_stride": (5, 8, 8),
}
MODEL = {"model_type": "wav2vec2", "config_overrides": WAV2VEC2, "learning_rate": 1e-5}
PER_UTTERANCE = {
    "id", "reference", "hypothesis", "confidence", "word_errors", "ref_words", "char_errors",
    "duration_s", "speaker", "audio",
}  # fmt: skip


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    """A config and the run folder of a fit validated and checkpointed at steps 4 and 8."""
    directory = tmp_path_factory.mktemp("cli")
    config = tiny_config(directory, model=MODEL, trainer={"max_steps": 8, "val_check_interval": 4})
    assert main(["fit", "--config", str(config)]) == 0
    (run,) = run_dirs(directory)
    return config, run


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _report_data(page: Path) -> dict:
    """The numbers an evaluation report carries (see asr_lightning/report/page.py)."""
    text = page.read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="report-data">')
    return json.loads(text[text.index(">", start) + 1 : text.index("</script>", start)])


def test_fit_writes_checkpoints_tensorboard_logs_config_and_hf_model(fitted):
    _, run = fitted
    checkpoints = {path.name.split("-")[0] for path in (run / "checkpoints").iterdir()}
    assert checkpoints == {"last.ckpt", "step4", "step8"}  # the best 2 of 2 validations
    assert list(run.glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 8
    assert saved["release_memory"] == {"enabled": True, "every_n_batches": None}  # every run
    assert (run / "hf_model" / "model.safetensors").is_file()
    for tag in ("train/loss", "val/wer", "val/cer", "val/loss", "lr-AdamW/encoder"):
        assert last_scalar(run, tag) >= 0


def test_validate_test_and_predict_write_metrics_and_per_utterance_jsonl(fitted):
    config, run = fitted
    directory = config.parent
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    (checkpointing,) = [value for key, value in state.items() if "Checkpoint" in key]
    ids = sorted(manifest_ids(directory / "eval.jsonl"))

    for command, ckpt in (("validate", "best"), ("test", "best"), ("predict", "last")):
        assert main([command, "--config", str(config), "--ckpt_path", ckpt]) == 0
    validated, tested, predicted = run_dirs(directory)[-3:]

    for run_dir, ckpt in ((validated, "best_model_path"), (predicted, "last_model_path")):
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())["ckpt_path"]
        assert resolved == checkpointing[ckpt]
    best_wer = float(checkpointing["best_model_score"])
    assert last_scalar(validated, "val/wer") == pytest.approx(best_wer)
    assert last_scalar(tested, "test/wer") == pytest.approx(best_wer)
    records = _lines(tested / "predictions" / "test_test.jsonl")
    assert sorted(r["id"] for r in records) == ids
    assert all(PER_UTTERANCE <= set(r) for r in records)
    words = sum(r["ref_words"] for r in records)
    assert sum(r["word_errors"] for r in records) / words == pytest.approx(best_wer)
    manifest = {row["id"]: row for row in _lines(directory / "eval.jsonl")}
    for record in records:  # what the report groups by, from the data
        row = manifest[record["id"]]
        assert (record["speaker"], record["audio"]) == (row["speaker"], row["audio_filepath"])
        assert record["duration_s"] == pytest.approx(row["duration"], abs=0.02)
    # the report test writes next to its predictions agrees with the logged metrics
    (reported,) = _report_data(tested / "predictions" / "report.html")["sets"]
    assert (reported["name"], reported["utterances"]) == ("test", len(ids))
    assert reported["wer"] == pytest.approx(last_scalar(tested, "test/wer"), rel=1e-6)
    assert reported["cer"] == pytest.approx(last_scalar(tested, "test/cer"), rel=1e-6)
    assert reported["word_errors"] == sum(r["word_errors"] for r in records)
    page = directory / "again.html"
    assert main(["report", str(tested / "predictions" / "test_test.jsonl"), "--output",
                 str(page), "--worst", "2"]) == 0  # fmt: skip
    assert _report_data(page) == _report_data(tested / "predictions" / "report.html")
    predictions = _lines(predicted / "predictions" / "predict_predict.jsonl")
    assert sorted(r["id"] for r in predictions) == ids
    assert all(isinstance(r["hypothesis"], str) for r in predictions)


def _scored_wer(records: list[dict]) -> float:
    return sum(r["word_errors"] for r in records) / sum(r["ref_words"] for r in records)


def test_unreadable_test_audio_is_scored_whole_counted_and_listed(fitted, tmp_path):
    config, _ = fitted
    directory = config.parent
    nan = tmp_path / "nan.wav"  # a valid header in front of NaN samples, duration given
    sf.write(nan, np.full(8000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    garbage = tmp_path / "garbage.wav"  # not audio, no duration: setup cannot read it
    garbage.write_bytes(b"this is not a wav file" * 50)
    rows = [json.loads(line) for line in (directory / "eval.jsonl").read_text().splitlines()]
    rows += [
        {"audio_filepath": str(nan), "text": "HELP STOP", "duration": 0.5, "id": "nan"},
        {"audio_filepath": str(garbage), "text": "EIGHT", "id": "garbage"},
    ]
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = ["test", "--config", str(config), "--ckpt_path", "last", "--data.test", str(manifest)]

    with pytest.warns(UserWarning, match=r"2 utterance\(s\) could not be read") as warned:
        assert main(test) == 0
    tested = run_dirs(directory)[-1]
    records = _lines(tested / "predictions" / "test_test.jsonl")
    assert [r["id"] for r in records].count("nan") == 1 and len(records) == len(rows)
    unreadable = {r["id"]: r for r in records if "unreadable" in r}
    assert set(unreadable) == {"nan", "garbage"}
    assert "NaN" in unreadable["nan"]["unreadable"]
    assert all(
        r["hypothesis"] == "" and r["word_errors"] == r["ref_words"] for r in unreadable.values()
    )
    assert (unreadable["nan"]["duration_s"], unreadable["garbage"]["duration_s"]) == (0.5, None)
    assert unreadable["garbage"]["audio"] == str(garbage)
    assert unreadable["garbage"]["speaker"] is None and records[0]["speaker"]
    assert last_scalar(tested, "test/unreadable") == 2
    assert last_scalar(tested, "test/wer") == pytest.approx(_scored_wer(records))
    listed = next(str(w.message) for w in warned if "could not be read" in str(w.message))
    assert "nan: decode failed: 8000 of 8000 samples are NaN" in listed and "garbage:" in listed

    assert main([*test, "--model.unreadable", "exclude"]) == 0
    excluded = run_dirs(directory)[-1]
    kept = [r for r in _lines(excluded / "predictions" / "test_test.jsonl") if "word_errors" in r]
    assert len(kept) == len(rows) - 2
    assert last_scalar(excluded, "test/wer") == pytest.approx(_scored_wer(kept))
    (reported,) = _report_data(excluded / "predictions" / "report.html")["sets"]
    assert (reported["utterances"], reported["scored"], reported["unreadable"]) == (
        len(rows), len(rows) - 2, 2,
    )  # fmt: skip
    assert reported["wer"] == pytest.approx(last_scalar(excluded, "test/wer"), rel=1e-6)


def test_report_names_a_bad_predictions_file_and_its_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2
    assert "no predictions file" in capsys.readouterr().err
    bad = tmp_path / "test_bad.jsonl"
    bad.write_text('{"id": "a", "reference": "A", "hypothesis": "A"}\nnot json\n')
    assert main(["report", str(bad), "--output", str(tmp_path / "r.html")]) == 2
    error = capsys.readouterr().err
    assert f"asr-lightning: error: {bad}:2: not JSON" in error and "Traceback" not in error
    assert not (tmp_path / "r.html").exists()


def test_test_scores_with_an_lm_and_its_jsonl_agrees(fitted, tmp_path):
    config, _ = fitted
    directory = config.parent
    texts = [
        json.loads(line)["text"] for line in (directory / "train.jsonl").read_text().splitlines()
    ]
    lm = write_arpa(tmp_path / "train_3gram.arpa", *kneser_ney(texts, order=3))
    test = ["test", "--config", str(config), "--ckpt_path", "best"]

    assert main([*test, "--decoding.lm", str(lm), "--decoding.beam_width", "8"]) == 0
    with_lm = run_dirs(directory)[-1]
    assert main(test) == 0
    greedy = run_dirs(directory)[-1]

    saved = yaml.safe_load((with_lm / "config.yaml").read_text())
    assert saved["decoding"]["lm"] == str(lm) and saved["decoding"]["beam_width"] == 8
    lm_records = _lines(with_lm / "predictions" / "test_test.jsonl")
    greedy_records = _lines(greedy / "predictions" / "test_test.jsonl")
    assert len(lm_records) == len(greedy_records) == len(manifest_ids(directory / "eval.jsonl"))
    assert last_scalar(with_lm, "test/wer") == pytest.approx(_scored_wer(lm_records))
    assert [r["hypothesis"] for r in lm_records] != [r["hypothesis"] for r in greedy_records]


def test_the_hf_folder_loads_in_transformers_transcribes_and_fine_tunes_again(fitted, tmp_path):
    config, run = fitted
    folder = run / "hf_model"
    first = _lines(config.parent / "eval.jsonl")[0]
    audio = load_audio(first["audio_filepath"])

    model = AutoModelForCTC.from_pretrained(folder).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        inputs = extractor(audio, sampling_rate=16_000, return_tensors="pt")
        ids = model(inputs["input_values"]).logits.argmax(-1)[0]
    text = pipeline("automatic-speech-recognition", model=str(folder))(audio)["text"]
    assert text and text == tokenizer.decode(ids)

    again = ["--model.model_name_or_path", str(folder), "--model.model_type", "null"]
    again += ["--model.config_overrides", "null", "--trainer.max_steps", "2"]
    again += ["--trainer.val_check_interval", "2", "--trainer.logger.init_args.name", "again"]
    again += ["--data.level", "rms"]
    assert main(["fit", "--config", str(config), *again]) == 0
    hf_model = config.parent / "runs" / "again" / "version_0" / "hf_model"
    assert (hf_model / "model.safetensors").is_file()
    # the data's level normalization is saved with the model, for transcribe/serve/export
    saved = json.loads((hf_model / "preprocessor_config.json").read_text())
    assert saved["asr_lightning_level"] == "rms"
    assert (
        json.loads((folder / "preprocessor_config.json").read_text())["asr_lightning_level"]
        == "none"
    )


def test_print_config_is_yaml_naming_the_sources_of_linked_values(fitted, capsys, tmp_path):
    config, _ = fitted
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)

    # links: model.model_name_or_path/model_type/config_overrides -> data, data.vocab -> model
    assert printed["model"]["model_type"] == "wav2vec2"
    assert printed["model"]["config_overrides"]["hidden_size"] == WAV2VEC2["hidden_size"]
    assert "model_name_or_path" in printed["model"] and "vocab" not in printed["model"]
    assert not {"processor", "model_type", "model_config_overrides"} & set(printed["data"])
    assert printed["checkpoint"]["monitor"] == printed["early_stopping"]["monitor"] == "val/wer"
    # and it is a valid config in its turn
    again = tmp_path / "printed.yaml"
    again.write_text(yaml.safe_dump(printed))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(again), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == printed


def test_the_cv17_recipe_parses_without_loading_a_model(capsys, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("print_config must not load a model or a processor")

    monkeypatch.setattr(CTCModule, "configure_model", no_download)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_download)

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(REPO_ROOT / "configs" / "cv17.yaml"), "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)

    trainer, model, data = printed["trainer"], printed["model"], printed["data"]
    assert model["model_name_or_path"] == "facebook/wav2vec2-base-960h"
    assert (model["learning_rate"], model["warmup_ratio"], model["weight_decay"]) == (3e-5, 0.05, 0)
    assert trainer["precision"] == "16-mixed" and trainer["gradient_clip_val"] == 1.0
    assert (trainer["max_epochs"], trainer["accumulate_grad_batches"]) == (3, 8)
    assert trainer["val_check_interval"] == 500 * 8 and trainer["log_every_n_steps"] == 50
    assert data["train"]["split"] == "train" and data["train"]["text_column"] == "sentence"
    assert (data["batch_size"], data["max_batch_seconds"]) == (8, None)
    assert (data["min_duration_s"], data["max_duration_s"]) == (1.0, 18.0)
    assert printed["checkpoint"]["save_top_k"] == 2 and printed["early_stopping"]["patience"] == 3
    assert printed["seed_everything"] == 42


def test_transcripts_the_vocabulary_cannot_spell_stop_before_training(tmp_path, capsys):
    # a "pretrained" model whose vocabulary is upper-case Latin; Cyrillic and digit transcripts
    latin = build_vocab(["ABCDEFGHIJKLMNOPQRSTUVWXYZ'"])
    module = CTCModule(None, "wav2vec2", config_overrides=WAV2VEC2, vocab=latin)
    module.configure_model()
    folder = module.save_hf(tmp_path / "latin")
    cyrillic = write_manifest(tmp_path / "ru.jsonl", "train", 6, text="привет мир")
    digits = write_manifest(tmp_path / "digits.jsonl", "train", 6, text="12 34")
    runs = str(tmp_path / "runs")

    args = ["fit", "--model.model_name_or_path", str(folder), "--data.num_workers", "0"]
    args += ["--data.duration_cache", "null", "--trainer.default_root_dir", runs]
    args += ["--trainer.logger.init_args.save_dir", runs]

    done = run_cli(*args, "--data.train", str(cyrillic))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "asr-lightning: error: 6 of 6 training transcripts" in done.stderr
    assert "empty after normalization" in done.stderr and "Traceback" not in done.stderr
    assert str(cyrillic) in done.stderr and "'П' (6)" in done.stderr  # the file, what is unknown
    capsys.readouterr()
    assert main([*args, "--data.train", str(digits)]) == 2
    assert "asr-lightning: error: 6 of 6 training transcripts" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("**/*.ckpt"))


def test_fit_without_checkpointing_or_logger_still_writes_the_hf_folder(tmp_path):
    config = tiny_config(tmp_path, train=8, evaluation=4, trainer={"max_steps": 2})
    assert main(["fit", "--config", str(config), "--trainer.enable_checkpointing", "false"]) == 0
    (run,) = run_dirs(tmp_path)
    assert (run / "hf_model" / "model.safetensors").is_file()
    assert not list(run.glob("**/*.ckpt"))
    bare = ["--trainer.logger", "false", "--hf_export.dirpath", str(tmp_path / "bare")]
    assert main(["fit", "--config", str(config), *bare]) == 0
    assert (tmp_path / "bare" / "model.safetensors").is_file()
