"""The ``asr-lightning`` command.

``fit|validate|test|predict`` are LightningCLI; ``data``, ``export``, ``transcribe``, ``serve``,
``sagemaker``, ``report`` and ``average`` are plain subcommands on top of the same pure functions.
This is one of the few places that reads the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from asr_lightning.data.durations import DEFAULT_CACHE_PATH, DurationCache
from asr_lightning.errors import AsrLightningError

log = logging.getLogger(__name__)

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
TOOL_SUBCOMMANDS = ("data", "export", "transcribe", "serve", "sagemaker", "report", "average")
#: Default of ``serve --host`` (a container sets 0.0.0.0 here; see the Dockerfile).
SERVE_HOST_ENV = "ASR_LIGHTNING_SERVE_HOST"
#: Files from which ``transcribe`` shows a progress bar (on a terminal).
PROGRESS_MIN_FILES = 10


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


def _tool_parser(prog: str, description: str) -> Any:
    """A jsonargparse parser: options built from the dataclasses, each default written once."""
    from jsonargparse import ArgumentParser

    return ArgumentParser(prog=f"asr-lightning {prog}", description=description)


def _add_decoding(parser: Any) -> None:
    from asr_lightning.decoding.options import DecodingOptions

    parser.add_class_arguments(DecodingOptions, "decoding")


def _decoding(parser: Any, argv: Sequence[str], model: str) -> Any:
    """The model folder's decoding settings with the ``--decoding.*`` given on top."""
    from asr_lightning.decoding.package import resolve_decoding

    given = parser.parse_args(list(argv), defaults=False).get("decoding") or {}
    return resolve_decoding(model, dict(given))


def _export_parser() -> Any:
    from asr_lightning.export.onnx import DEFAULT_OPSET

    parser = _tool_parser(
        "export", "Export a model folder or checkpoint to ONNX and check it against PyTorch."
    )
    parser.add_argument("model", type=str, help="Hugging Face model folder, hub id or .ckpt")
    parser.add_argument("--output", type=Path, required=True, help="ONNX folder to write")
    parser.add_argument(
        "--format", type=Literal["onnx", "sherpa-onnx"], default="onnx",
        help="onnx: asr-lightning's ONNX folder; sherpa-onnx: model.onnx and tokens.txt for "
        "sherpa-onnx's NeMo CTC recognizer (log-mel models)",
    )  # fmt: skip
    parser.add_argument("--quantize", type=Literal["int8"] | None, default=None,
                        help="also write the INT8 model")  # fmt: skip
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument(
        "--check-audio", type=str, nargs="*", default=[],
        help="clips (files, folders, globs) to check on",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the check report as JSON")
    _add_decoding(parser)  # settings (and LM) the ONNX folder carries
    return parser


def export_main(argv: Sequence[str]) -> int:
    from asr_lightning.export.onnx import export_onnx
    from asr_lightning.inference.files import expand_audio_args

    parser = _export_parser()
    args = parser.parse_args(list(argv))
    decoding = _decoding(parser, argv, args.model)
    if args.format == "sherpa-onnx":
        from asr_lightning.errors import ConfigError
        from asr_lightning.export.sherpa import export_sherpa

        if args.quantize:
            raise ConfigError("--quantize is for --format onnx; sherpa-onnx gets the fp32 model")
        sherpa = export_sherpa(
            args.model,
            args.output,
            opset=args.opset,
            check_audio=expand_audio_args(args.check_audio),
            decoding=decoding,
        )
        print(json.dumps(sherpa.to_dict(), indent=2) if args.json else sherpa.render())
        return 0
    report = export_onnx(
        args.model,
        args.output,
        opset=args.opset,
        quantize=args.quantize,
        check_audio=expand_audio_args(args.check_audio),
        decoding=decoding,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0


def _runtime_arguments(parser: Any) -> None:
    """Options ``transcribe`` and ``serve`` share: the runtime and how it decodes."""
    from asr_lightning.artifacts import ONNX_FILE
    from asr_lightning.inference.chunking import ChunkOptions

    parser.add_argument("--backend", type=Literal["auto", "torch", "onnx"], default="auto",
                        help="auto: onnxruntime for ONNX folders, PyTorch otherwise")  # fmt: skip
    parser.add_argument("--onnx-file", type=str, default=ONNX_FILE, help="e.g. model.int8.onnx")
    parser.add_argument("--threads", type=int | None, default=None, help="onnxruntime threads")
    parser.add_class_arguments(ChunkOptions, "chunking")
    _add_decoding(parser)


def _transcribe_parser() -> Any:
    from asr_lightning.inference.transcriber import DEFAULT_BATCH_SIZE

    parser = _tool_parser("transcribe", "Transcribe audio files of any length.")
    parser.add_argument("model", type=str, help="model folder, .ckpt checkpoint or ONNX folder")
    parser.add_argument("audio", type=str, nargs="+", help="audio files, folders or globs")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="windows per forward pass")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="JSON with word timestamps")
    _runtime_arguments(parser)
    return parser


def transcribe_main(argv: Sequence[str]) -> int:
    from asr_lightning.inference.files import expand_audio_args
    from asr_lightning.inference.transcriber import Transcriber

    parser = _transcribe_parser()
    args = parser.parse_args(list(argv))
    files = expand_audio_args(args.audio)
    transcriber = Transcriber.from_pretrained(
        args.model,
        backend=args.backend,
        onnx_file=args.onnx_file,
        num_threads=args.threads,
        decoding=_decoding(parser, argv, args.model),
        chunking=parser.instantiate(args).chunking,
        batch_size=args.batch_size,
    )
    progress = len(files) >= PROGRESS_MIN_FILES and sys.stderr.isatty()
    results = transcriber.transcribe(files, progress=progress)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    for result in results:
        if result.error:
            print(f"{result.source}: error: {result.error}", file=sys.stderr)
        elif not args.json:
            print(f"{result.source}\t{result.text}")
    return 1 if any(r.error for r in results) else 0


def _serve_parser() -> Any:
    from asr_lightning.serve.app import KEEP_ALIVE_S, READ_TIMEOUT_S, SHUTDOWN_TIMEOUT_S
    from asr_lightning.serve.batching import BatchOptions
    from asr_lightning.serve.loading import SAGEMAKER_MODEL_DIR
    from asr_lightning.serve.requests import DEFAULT_MAX_BODY_MB
    from asr_lightning.serve.server import DEFAULT_HOST, DEFAULT_PORT
    from asr_lightning.serve.streaming import StreamOptions

    parser = _tool_parser(
        "serve",
        "ASGI server (uvicorn) with SageMaker's container contract (GET /ping, POST "
        "/invocations), batching concurrent requests, Prometheus metrics at GET /metrics.",
    )
    parser.add_argument(
        "model", type=str, nargs="?", default=SAGEMAKER_MODEL_DIR,
        help="model dir (onnx/ preferred over hf_model/), HF or ONNX folder, or .ckpt "
        "(default: /opt/ml/model, where SageMaker unpacks model.tar.gz)",
    )  # fmt: skip
    parser.add_argument(
        "--host", type=str, default=os.environ.get(SERVE_HOST_ENV, DEFAULT_HOST),
        help=f"interface (${SERVE_HOST_ENV} sets the default)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, each with its own model (threads shared out)")  # fmt: skip
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB,
                        help="larger bodies get 413 (MiB)")  # fmt: skip
    parser.add_argument("--read-timeout-s", type=float, default=READ_TIMEOUT_S,
                        help="a body not received in this time gets 408")  # fmt: skip
    parser.add_argument("--shutdown-timeout-s", type=float, default=SHUTDOWN_TIMEOUT_S,
                        help="at SIGTERM, requests in flight get this long to finish")  # fmt: skip
    parser.add_argument("--keep-alive-s", type=float, default=KEEP_ALIVE_S,
                        help="idle keep-alive connections are closed after this")  # fmt: skip
    parser.add_argument("--max-concurrent", type=int | None, default=None,
                        help="requests answered at once beyond this get 503")  # fmt: skip
    parser.add_argument("--access-log", action="store_true", help="log a line per request")
    parser.add_class_arguments(BatchOptions, "batching")
    parser.add_class_arguments(StreamOptions, "streams")  # /stream: partials and limits
    _runtime_arguments(parser)
    return parser


def serve_main(argv: Sequence[str]) -> int:
    from asr_lightning.serve.app import ServeOptions, ServingApp
    from asr_lightning.serve.loading import resolve_model
    from asr_lightning.serve.server import AsrServer, ModelSpec, WorkerPool, threads_per_worker

    parser = _serve_parser()
    args = parser.parse_args(list(argv))
    options = parser.instantiate(args)
    batching = options.batching
    spec = ModelSpec(
        args.model,
        backend=args.backend,
        onnx_file=args.onnx_file,
        num_threads=args.threads or threads_per_worker(args.workers),
        batch_size=max(8, batching.max_batch_size),
        decoding=_decoding(parser, argv, resolve_model(args.model, args.backend)),
        chunking=options.chunking,
    )
    serve_options = ServeOptions(
        batching,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        read_timeout_s=args.read_timeout_s,
        shutdown_timeout_s=args.shutdown_timeout_s,
        keep_alive_s=args.keep_alive_s,
        max_concurrent=args.max_concurrent,
        streams=options.streams,
    )
    routes = "POST /invocations, GET /ping, GET /metrics"
    if args.workers > 1:
        pool = WorkerPool(spec, serve_options, args.host, args.port, args.workers)
        print(f"serving {args.model} on {pool.url} with {args.workers} workers ({routes})",
              flush=True)  # fmt: skip
        return pool.run()
    transcriber = spec.load()
    server = AsrServer(ServingApp(transcriber, serve_options), args.host, args.port,
                       access_log=args.access_log)  # fmt: skip
    print(
        f"serving {args.model} on {server.url} ({routes}; decoding: "
        f"{transcriber.decoding.describe()})",
        flush=True,
    )
    server.serve_forever()  # SIGTERM / Ctrl-C: drain, then exit
    return 0


def _report_parser() -> Any:
    from asr_lightning.report.build import ReportOptions

    parser = _tool_parser(
        "report",
        "Write the evaluation report of test predictions: WER and CER per set, by duration and "
        "speaker, frequent errors, the worst utterances with their audio, confidence against "
        "errors; one self-contained HTML page.",
    )
    parser.add_argument(
        "predictions", type=str, nargs="+",
        help="predictions files of asr-lightning test (<run>/predictions/test_<set>.jsonl), "
        "one per set",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("report.html"), help="page to write")
    parser.add_class_arguments(ReportOptions, None)
    return parser


def report_main(argv: Sequence[str]) -> int:
    from dataclasses import fields

    from asr_lightning.report.build import ReportOptions, write_report

    args = _report_parser().parse_args(list(argv))
    options = ReportOptions(**{f.name: args[f.name] for f in fields(ReportOptions)})
    print(write_report(args.predictions, args.output, options))
    return 0


def _average_parser() -> Any:
    parser = _tool_parser(
        "average",
        "Average the weights of fit checkpoints (the K best by the monitored dev metric, the "
        "last N, or those given) into one checkpoint for test, transcribe and export. Optimizer "
        "state is dropped: fit cannot resume from it (fine-tune its --hf-output folder instead).",
    )
    parser.add_argument(
        "checkpoints", type=str, nargs="+",
        help=".ckpt files, or run folders (their checkpoints/) and checkpoint folders",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="the .ckpt to write")
    parser.add_argument("--best", type=int | None, default=None,
                        help="average the K best by their monitored score (val/wer)")  # fmt: skip
    parser.add_argument("--last", type=int | None, default=None,
                        help="average the N of the highest steps")  # fmt: skip
    parser.add_argument("--hf-output", type=Path | None, default=None,
                        help="also write the averaged model as a Hugging Face folder")  # fmt: skip
    return parser


def average_main(argv: Sequence[str]) -> int:
    from asr_lightning.errors import ConfigError
    from asr_lightning.model import averaging

    args = _average_parser().parse_args(list(argv))
    if args.best is not None and args.last is not None:
        raise ConfigError("give --best K or --last N, not both")
    paths = averaging.find_checkpoints(args.checkpoints)
    infos = [averaging.read_info(path) for path in paths]
    if args.best is not None:
        chosen = averaging.select_best(infos, args.best)
        selection = f"best {len(chosen)} by {chosen[0].monitor}"
    elif args.last is not None:
        chosen = averaging.select_last(infos, args.last)
        selection = f"last {len(chosen)}"
    elif any(Path(source).is_dir() for source in args.checkpoints):
        chosen = averaging.select_last(infos, len(infos))  # a folder's last.ckpt copies a step
        selection = "every step of the folders"
    else:
        chosen, selection = infos, "given"
    wanted = args.best or args.last or len(chosen)
    if len(chosen) < wanted:
        log.warning("averaging %d checkpoint(s), not %d: no more to choose from", len(chosen),
                    wanted)  # fmt: skip
    paths = [info.path for info in chosen]
    report = averaging.average_checkpoints(paths, args.output, selection)
    print(report.render())
    if args.hf_output is not None:
        from asr_lightning.training.module import CTCModule

        module = CTCModule.load_from_checkpoint(args.output, map_location="cpu")
        print(f"Hugging Face folder: {module.save_hf(args.hf_output)}")
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
        if command == "export":
            return export_main(argv[1:])
        if command == "transcribe":
            return transcribe_main(argv[1:])
        if command == "serve":
            return serve_main(argv[1:])
        if command == "report":
            return report_main(argv[1:])
        if command == "average":
            return average_main(argv[1:])
        if command == "sagemaker":
            from asr_lightning.sagemaker.cli import sagemaker_main

            return sagemaker_main(argv[1:])
        from asr_lightning.training.lightning_cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    except AsrLightningError as err:
        print(f"asr-lightning: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
