"""A BPE vocabulary end to end: ``fit`` from scratch through the CLI on real AN4 clips, then
every consumer of the saved Hugging Face folder reads the same transcript from it.

One tiny Parakeet is trained 4 steps at a tiny learning rate (its head still emits pieces on
every clip, as in tests/test_parity.py) with ``data.vocab_type: bpe``. Its ``hf_model`` folder
is then loaded by ``AutoTokenizer`` and ``transformers.pipeline``, exported to ONNX, served, and
decoded by beam search with a word 3-gram LM built from the training transcripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer, ParakeetTokenizer, pipeline

from asr_lightning.audio.decode import load_audio
from asr_lightning.cli import main
from asr_lightning.decoding.ngram import kneser_ney, write_arpa
from asr_lightning.decoding.options import DecodingOptions
from asr_lightning.inference.transcriber import Transcriber
from asr_lightning.serve.app import ServingApp
from tests.training_support import run_dirs, tiny_config

pytestmark = pytest.mark.slow
TRAIN_CLIPS, TEST_CLIPS = 32, 6
VOCAB_SIZE = 48


def _an4_manifest(shared_data: Path, split: str, count: int, path: Path) -> list[str]:
    """The first ``count`` clips of an AN4 split as a manifest; their transcripts."""
    etc = shared_data / "an4" / "etc"
    ids = (etc / f"an4_{split}.fileids").read_text().split()[:count]
    texts = {
        line.rsplit("(", 1)[1].rstrip(")\n"): line.rsplit("(", 1)[0]
        for line in (etc / f"an4_{split}.transcription").read_text().splitlines()
    }
    rows = []
    for file_id in ids:
        stem = file_id.rsplit("/", 1)[1]
        text = texts[stem].replace("<s>", "").replace("</s>", "").strip()
        audio = shared_data / "an4" / "wav" / f"{file_id}.sph"
        rows.append({"audio_filepath": str(audio), "text": text, "id": stem})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return [row["text"] for row in rows]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, shared_data):
    """``(run folder, test clips, training transcripts)`` of one BPE fit."""
    root = tmp_path_factory.mktemp("subword")
    texts = _an4_manifest(shared_data, "train", TRAIN_CLIPS, root / "an4_train.jsonl")
    _an4_manifest(shared_data, "test", TEST_CLIPS, root / "an4_test.jsonl")
    config = tiny_config(
        root,
        trainer={"max_steps": 4},
        model={"learning_rate": 1e-5},
        data={
            "train": str(root / "an4_train.jsonl"),
            "validation": str(root / "an4_test.jsonl"),
            "test": str(root / "an4_test.jsonl"),
            "predict": str(root / "an4_test.jsonl"),
            "vocab_type": "bpe",
            "vocab_size": VOCAB_SIZE,
        },
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["asr-lightning", "fit", "--config", str(config)])
        assert main() == 0
    clips = [
        Path(json.loads(line)["audio_filepath"])
        for line in (root / "an4_test.jsonl").read_text().splitlines()
    ]
    return run_dirs(root)[-1], clips, texts


def test_the_folder_holds_the_bpe_tokenizer_trained_on_the_training_transcripts(fitted):
    run, _, texts = fitted
    hf_model = run / "hf_model"
    tokenizer = AutoTokenizer.from_pretrained(str(hf_model))
    assert isinstance(tokenizer, ParakeetTokenizer)
    assert (hf_model / "tokenizer.json").is_file()
    vocab = tokenizer.get_vocab()
    assert len(vocab) == VOCAB_SIZE and vocab["<pad>"] == 0 and vocab["<unk>"] == 1
    assert any(token.startswith("▁") and len(token) > 2 for token in vocab)  # real subwords
    for text in texts:  # labels spell the transcripts back
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, group_tokens=False) == text


def test_pipeline_onnx_and_serve_give_the_transcriber_s_transcripts(fitted, tmp_path):
    run, clips, _ = fitted
    hf_model = run / "hf_model"
    greedy = DecodingOptions(method="greedy")
    transcriber = Transcriber.from_pretrained(hf_model, decoding=greedy)
    ours = [transcript.text for transcript in transcriber.transcribe(clips)]
    assert sum(bool(text) for text in ours) >= len(clips) - 1  # the model emits pieces

    # the checkpoint rebuilds the same tokenizer from its hyperparameters
    checkpoint = Transcriber.from_pretrained(run / "checkpoints" / "last.ckpt", decoding=greedy)
    assert [transcript.text for transcript in checkpoint.transcribe(clips)] == ours

    asr = pipeline("automatic-speech-recognition", model=str(hf_model))
    audios = [load_audio(clip) for clip in clips]
    assert [" ".join(asr(audio.copy())["text"].split()) for audio in audios] == ours

    assert main(["export", str(hf_model), "--output", str(tmp_path / "onnx")]) == 0
    onnx = Transcriber.from_pretrained(tmp_path / "onnx", decoding=greedy)
    assert [t.text for t in onnx.transcribe(clips)] == ours

    app = ServingApp(Transcriber.from_pretrained(hf_model, decoding=greedy))
    try:
        served = [
            app.invoke(clip.read_bytes(), "application/octet-stream", None, None)[1]["text"]
            for clip in clips
        ]
    finally:
        app.close()
    assert served == ours


def test_beam_search_with_a_word_lm_gives_whole_words(fitted, tmp_path):
    run, clips, texts = fitted
    hf_model = run / "hf_model"
    lm = write_arpa(tmp_path / "an4_3gram.arpa", *kneser_ney(texts, order=3))
    beam = DecodingOptions(method="beam", lm=str(lm), alpha=2.0, beta=0.0)
    transcripts = Transcriber.from_pretrained(hf_model, decoding=beam).transcribe(clips)
    greedy = DecodingOptions(method="greedy")
    plain = Transcriber.from_pretrained(hf_model, decoding=greedy).transcribe(clips)
    assert [t.text for t in transcripts] != [t.text for t in plain]  # the LM decides
    assert any(t.text for t in transcripts)
    for transcript in transcripts:
        words = [word.word for word in transcript.words]
        assert " ".join(words) == transcript.text  # one Word per word, pieces joined
        assert all(" " not in word and "▁" not in word for word in words)
        times = [(word.start, word.end) for word in transcript.words]
        assert all(start < end for start, end in times)
        assert all(a[1] <= b[0] for a, b in zip(times, times[1:], strict=False))
