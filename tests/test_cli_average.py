"""``asr-lightning average`` and the ``AverageCheckpoints`` callback on a tiny fit, end to end:
the averaged checkpoint is the mean of the best ones, ``test``, ``transcribe``, ``export`` and
the Hugging Face folder read it, and ``fit`` refuses to resume from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asr_lightning.cli import main
from asr_lightning.model.averaging import AVERAGED_KEY
from asr_lightning.model.metrics import utterance_errors
from tests.test_cli import MODEL
from tests.training_support import checkpoint_weights, last_scalar, run_dirs, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
AN4_SPEAKER = "an4/wav/an4test_clstk/fcaw"
AVERAGE_CALLBACK = {
    "class_path": "asr_lightning.training.callbacks.AverageCheckpoints",
    "init_args": {"k": 2},
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    """A config and the run folder of a fit validated at steps 2, 4 and 6, its 3 checkpoints
    kept, the best 2 averaged by the callback."""
    directory = tmp_path_factory.mktemp("average")
    trainer = {"max_steps": 6, "val_check_interval": 2, "callbacks": [AVERAGE_CALLBACK]}
    config = tiny_config(
        directory, train=24, evaluation=8, model=MODEL, trainer=trainer,
        checkpoint={"save_top_k": 3},
    )  # fmt: skip
    assert main(["fit", "--config", str(config)]) == 0
    (run,) = run_dirs(directory)
    return config, run


def _kept_scores(run: Path) -> dict[str, float]:
    """``{checkpoint path: dev WER}`` the run's checkpoint callback kept."""
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]
    (checkpointing,) = [value for key, value in state.items() if "Checkpoint" in key]
    return {path: float(score) for path, score in checkpointing["best_k_models"].items()}


def test_average_best_k_is_the_mean_of_the_best_dev_checkpoints_like_the_callback(fitted, tmp_path):
    config, run = fitted
    out = tmp_path / "averaged.ckpt"
    assert main(["average", str(run), "--best", "2", "--output", str(out)]) == 0

    scores = _kept_scores(run)
    assert len(scores) == 3
    averaged = torch.load(out, weights_only=False)
    sources = averaged[AVERAGED_KEY]["sources"]
    assert len(sources) == 2 and set(sources) <= set(scores)
    left_out = (set(scores) - set(sources)).pop()
    assert max(scores[path] for path in sources) <= scores[left_out]  # the 2 best by dev WER
    assert averaged[AVERAGED_KEY]["selection"] == "best 2 by val/wer"
    first, second = (checkpoint_weights(Path(path)) for path in sources)
    for key, tensor in averaged["state_dict"].items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (first[key] + second[key]) / 2)
        else:
            assert torch.equal(tensor, second[key])
    assert "optimizer_states" not in averaged and "lr_schedulers" not in averaged

    # the callback chose the same checkpoints at the end of fit
    by_callback = torch.load(run / "averaged.ckpt", weights_only=False)
    assert by_callback[AVERAGED_KEY]["sources"] == sources
    for key, tensor in by_callback["state_dict"].items():
        assert torch.equal(tensor, averaged["state_dict"][key]), key
    assert (run / "hf_model_averaged" / "model.safetensors").is_file()


def test_the_averaged_checkpoint_tests_transcribes_and_exports_like_a_normal_one(
    fitted, tmp_path, capsys, shared_data
):
    config, run = fitted
    averaged, hf = run / "averaged.ckpt", tmp_path / "hf"
    assert main(["average", str(averaged), "--output", str(tmp_path / "again.ckpt"),
                 "--hf-output", str(hf)]) == 0  # fmt: skip
    assert main(["test", "--config", str(config), "--ckpt_path", str(averaged)]) == 0
    tested = run_dirs(config.parent)[-1]
    lines = (tested / "predictions" / "test_test.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    capsys.readouterr()

    audio = [record["audio"] for record in records]
    assert main(["transcribe", str(averaged), *audio, "--json"]) == 0
    by_path = {result["source"]: result["text"] for result in json.loads(capsys.readouterr().out)}
    assert main(["transcribe", str(hf), *audio, "--json"]) == 0
    from_hf = {result["source"]: result["text"] for result in json.loads(capsys.readouterr().out)}
    assert from_hf == by_path  # the HF folder holds the averaged weights
    errors = [utterance_errors(r["reference"], by_path[r["audio"]]) for r in records]
    words = sum(r["ref_words"] for r in records)
    transcribed_wer = sum(e["word_errors"] for e in errors) / words
    assert any(by_path.values())  # not a vacuous comparison of empty transcripts
    assert last_scalar(tested, "test/wer") == pytest.approx(transcribed_wer)

    clips = sorted((shared_data / AN4_SPEAKER).glob("*.sph"))[:2]  # real speech
    onnx = ["export", str(averaged), "--output", str(tmp_path / "onnx"), "--json"]
    assert main([*onnx, "--check-audio", *map(str, clips)]) == 0
    assert json.loads(capsys.readouterr().out)["checks"][0]["same_transcripts"] == 2


def test_fit_refuses_to_resume_from_an_averaged_checkpoint(fitted, capsys):
    config, run = fitted
    assert main(["fit", "--config", str(config), "--ckpt_path", str(run / "averaged.ckpt")]) == 2
    error = capsys.readouterr().err
    assert "is an averaged checkpoint" in error and "--model.model_name_or_path" in error


def test_averaging_other_models_names_the_files(fitted, tmp_path, capsys):
    _, run = fitted
    other = torch.load(run / "averaged.ckpt", weights_only=False)
    other["hyper_parameters"]["vocab"] = {"<pad>": 0, "A": 1}
    torch.save(other, tmp_path / "other.ckpt")
    last = run / "checkpoints" / "last.ckpt"
    args = ["average", str(last), str(tmp_path / "other.ckpt"), "--output", str(tmp_path / "o")]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert f"cannot average {tmp_path / 'other.ckpt'} with {last}: model.vocab differs" in error
    assert "Traceback" not in error
