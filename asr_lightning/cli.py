"""The ``asr-lightning`` command.

``fit|validate|test|predict`` are LightningCLI; ``data`` (and later ``export``, ``transcribe``,
``serve``, ``sagemaker``) are plain subcommands on top of the same pure functions. This is one of
the few places that reads the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from asr_lightning.data.durations import DEFAULT_CACHE_PATH, DurationCache
from asr_lightning.errors import AsrLightningError

log = logging.getLogger(__name__)

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
TOOL_SUBCOMMANDS = ("data",)


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-lightning data", description="Prepare corpora and check datasets."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="write NeMo-style JSONL manifests for a known corpus")
    prep.add_argument("corpus", choices=["an4", "fsdd"], help="corpus layout to read")
    prep.add_argument("src", type=Path, help="the corpus folder (e.g. ../shared/data/an4)")
    prep.add_argument("out", type=Path, help="folder to write train.jsonl / test.jsonl into")

    check = sub.add_parser("check", help="scan a dataset once and report what training will see")
    check.add_argument("source", help="manifest, CSV/TSV, Common Voice folder[#split], HF folder")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--min-duration", type=float, default=None, help="seconds (default 1.0)")
    check.add_argument("--max-duration", type=float, default=None, help="seconds (default 18.0)")
    check.add_argument(
        "--vocab-from",
        default=None,
        help="model folder or hub id whose tokenizer defines the vocabulary to check against",
    )
    check.add_argument(
        "--no-decode", action="store_true", help="read headers only (faster, misses corrupt data)"
    )
    check.add_argument(
        "--duration-cache",
        default=DEFAULT_CACHE_PATH,
        help="SQLite file caching durations for training; 'none' disables it "
        "(default %(default)s, which training reads too)",
    )
    return parser


def _duration_cache(path: str) -> DurationCache | None:
    if path.lower() == "none":
        return None
    return DurationCache(os.path.expanduser(path))


def data_main(argv: Sequence[str]) -> int:
    from asr_lightning.data import check, prepare
    from asr_lightning.data.filters import FilterRules
    from asr_lightning.data.sources import read_source

    args = _data_parser().parse_args(argv)
    if args.action == "prepare":
        writer = prepare.prepare_an4 if args.corpus == "an4" else prepare.prepare_fsdd
        written = writer(args.src, args.out)
        for split, path in written.items():
            n = sum(1 for _ in path.open(encoding="utf-8"))
            print(f"{split}: {n} utterances -> {path}")
        return 0

    rules_kwargs = {}
    if args.min_duration is not None:
        rules_kwargs["min_duration_s"] = args.min_duration
    if args.max_duration is not None:
        rules_kwargs["max_duration_s"] = args.max_duration
    normalizer = vocabulary = None
    if args.vocab_from:
        from asr_lightning.model.factory import build_processor
        from asr_lightning.text.normalize import TextNormalizer

        _, tokenizer = build_processor(args.vocab_from, None, None)
        vocabulary = tokenizer.get_vocab()
        normalizer = TextNormalizer.from_tokenizer(tokenizer)
    loaded = read_source(args.source)
    report = check.check_source(
        loaded.utterances,
        skipped_at_load=loaded.skipped,
        rules=FilterRules(**rules_kwargs),
        normalizer=normalizer,
        vocabulary=vocabulary,
        cache=_duration_cache(args.duration_cache),
        decode=not args.no_decode,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def _configure_logging() -> None:
    """Our INFO messages on stderr; Lightning configures its own logger."""
    logger = logging.getLogger("asr_lightning")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging()
    command = argv[0] if argv else ""
    try:
        if command == "data":
            return data_main(argv[1:])
        from asr_lightning.training import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    except AsrLightningError as err:
        print(f"asr-lightning: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
