"""Build a word n-gram language model (ARPA, interpolated Kneser-Ney) from transcripts.

    python scripts/build_ngram.py manifests/an4/train.jsonl --model MODEL --order 3 \
        --output lm/an4_train_3gram.arpa

Inputs are JSON-lines manifests (their ``text`` field) or plain text files (one transcript per
line). With ``--model`` (a model folder, checkpoint or ONNX folder) the transcripts are
normalized like the model's training labels, so the LM spells words as the model does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asr_lightning.decoding.ngram import kneser_ney, write_arpa


def read_transcripts(path: Path) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix in (".jsonl", ".json"):
        return [json.loads(line)["text"] for line in lines]
    return lines


def normalizer_for(model: str):
    from transformers import AutoTokenizer

    from asr_lightning.text.normalize import TextNormalizer

    if model.endswith(".ckpt"):
        from asr_lightning.inference.models import load_model

        return TextNormalizer.from_tokenizer(load_model(model).tokenizer)
    return TextNormalizer.from_tokenizer(AutoTokenizer.from_pretrained(model))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="JSONL manifests or text files")
    parser.add_argument("--output", type=Path, required=True, help="ARPA file to write")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    parser.add_argument("--model", default=None, help="normalize text like this model's labels")
    args = parser.parse_args(argv)
    texts = [text for path in args.inputs for text in read_transcripts(path)]
    if args.model:
        normalize = normalizer_for(args.model)
        texts = [normalize(text) for text in texts]
    probs, backoffs = kneser_ney(texts, args.order)
    write_arpa(args.output, probs, backoffs)
    print(f"{len(texts)} transcripts -> {len(probs)} n-grams (order {args.order}) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
