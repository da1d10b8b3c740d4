"""Inference speed and accuracy on a test manifest: PyTorch eager, onnxruntime, sherpa-onnx.

    python benchmarks/inference_speed.py --model runs/an4/.../hf_model \
        --manifest manifests/an4/test.jsonl --onnx-dir /tmp/an4_onnx \
        --lm lm/an4_train_3gram.arpa --result an4_inference.json

One run measures, on the same pre-decoded clips (audio decoding is the same for every runtime
and left out): the real-time factor (processing seconds / audio seconds) of the whole
transcriber (features, model, greedy decoding) and of the model alone, the WER of each runtime,
and how many transcripts are identical to PyTorch's. The runtimes take turns round by round,
and each row gives the median round (``rtf_runs`` holds every round). With ``--lm`` it also
scores beam search without and with the language model on the fp32 ONNX logits. For
log-mel (Parakeet) models a last row runs the ``--format sherpa-onnx`` export of the same model
in sherpa-onnx (its own front end and greedy search), timed after the others (``--no-sherpa``
leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import jiwer
import numpy as np
import torch

from asr_lightning.artifacts import INT8_FILE, ONNX_FILE
from asr_lightning.audio.decode import load_audio
from asr_lightning.decoding.decoder import CTCDecoder
from asr_lightning.decoding.lm import load_lm
from asr_lightning.decoding.options import DEFAULT_DECODING, DecodingOptions
from asr_lightning.errors import ModelError
from asr_lightning.export.onnx import export_onnx, quantize_int8
from asr_lightning.export.sherpa import TOKENS_FILE, export_sherpa
from asr_lightning.inference.chunking import ChunkOptions
from asr_lightning.inference.transcriber import (
    FEATURE_THREADS,
    FEATURES_AHEAD,
    Transcriber,
    torch_threads,
)
from asr_lightning.model.features import extract_features
from asr_lightning.text.normalize import TextNormalizer

WARMUP_CLIPS = 4
#: LM weight and word bonus grid searched on the held-out manifest (``--tune-manifest``).
TUNE_ALPHAS = (0.3, 0.5, 0.8, 1.2)
TUNE_BETAS = (0.0, 1.0, 2.0, 3.0)
#: INT8 variant that also quantizes the convolutions, to show why the default does not.
INT8_CONV_FILE = "model.int8-matmul-conv.onnx"


def _wer(references: list[str], hypotheses: list[str]) -> float:
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    return 100.0 * jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def _length_sorted_batches(audios: list[np.ndarray], batch_size: int) -> list[list[np.ndarray]]:
    """The clips in batches, longest first, as the transcriber forms them."""
    order = sorted(range(len(audios)), key=lambda i: audios[i].size, reverse=True)
    starts = range(0, len(order), batch_size)
    return [[audios[i] for i in order[k : k + batch_size]] for k in starts]


def _model_seconds(transcriber: Transcriber, audios: list[np.ndarray], batch_size: int) -> float:
    """Time of the backend alone over length-sorted batches (features computed beforehand)."""
    with torch_threads(FEATURE_THREADS):  # as the transcriber: no torch threads left spinning
        features = [transcriber.featurize(b) for b in _length_sorted_batches(audios, batch_size)]
    start = time.perf_counter()
    for batch in features:
        transcriber.backend(batch["inputs"], batch["attention_mask"])
    return time.perf_counter() - start


def _measure(transcriber: Transcriber, audios, batch_size: int) -> tuple[float, float, list]:
    """Seconds of one full transcription, seconds of the model alone, and the texts."""
    start = time.perf_counter()
    results = transcriber.transcribe_arrays(audios)
    seconds = time.perf_counter() - start
    return seconds, _model_seconds(transcriber, audios, batch_size), [r.text for r in results]


def _rows(runtimes: dict[str, tuple[Transcriber, int]], audios, references, repeats: int):
    """Median timings of every runtime over ``repeats`` rounds, the runtimes interleaved."""
    for transcriber, _ in runtimes.values():
        transcriber.transcribe_arrays(audios[:WARMUP_CLIPS])
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in runtimes}
    texts: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, (transcriber, threads) in runtimes.items():
            torch.set_num_threads(threads)
            seconds, model_seconds, texts[name] = _measure(
                transcriber, audios, transcriber.batch_size
            )
            timings[name].append((seconds, model_seconds))
    audio_seconds = sum(a.size for a in audios) / 16_000
    rows = []
    for name, runs in timings.items():
        seconds = float(np.median([r[0] for r in runs]))
        model_seconds = float(np.median([r[1] for r in runs]))
        row = {
            "runtime": name,
            "rtf": seconds / audio_seconds,
            "model_rtf": model_seconds / audio_seconds,
            "wer": _wer(references, texts[name]),
            "seconds": seconds,
            "audio_seconds": audio_seconds,
            "rtf_runs": [r[0] / audio_seconds for r in runs],
            "texts": texts[name],
        }
        print(f"{name}: RTF {row['rtf']:.5f} (model {row['model_rtf']:.5f}), WER {row['wer']:.2f}")
        rows.append(row)
    return rows


def _lm_rows(
    transcriber: Transcriber,
    audios,
    references,
    lm: str,
    beam: int,
    alpha,
    beta,
    with_plain_beam: bool = True,
):
    """WER of beam search without (optionally) and with the LM over the same logits."""
    name = f"beam {beam} + LM (alpha {alpha}, beta {beta})"
    decoders = {name: _beam(transcriber, lm, beam, alpha=alpha, beta=beta)}
    if with_plain_beam:
        decoders = {f"beam {beam}": _beam(transcriber, None, beam), **decoders}
    rows = []
    for name, decoder in decoders.items():
        start = time.perf_counter()
        texts = _texts_with(transcriber, decoder, audios)
        rows.append(
            {
                "decoding": name,
                "wer": _wer(references, texts),
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"{name}: WER {rows[-1]['wer']:.2f} ({rows[-1]['seconds']:.1f} s)")
    return rows


def _beam(transcriber: Transcriber, lm: str | None, beam: int, **weights) -> CTCDecoder:
    """A beam search decoder for the transcriber's vocabulary, with ``lm`` if given."""
    options = DecodingOptions(method="beam", beam_width=beam, lm=lm, **weights)
    return CTCDecoder(
        transcriber.tokenizer, transcriber.blank_id, transcriber.samples_per_frame, options
    )


def _texts_with(transcriber: Transcriber, decoder: CTCDecoder, audios) -> list[str]:
    """Transcripts with ``decoder``; the transcriber keeps its own decoder afterwards."""
    own, transcriber.decoder = transcriber.decoder, decoder
    try:
        return [r.text for r in transcriber.transcribe_arrays(audios)]
    finally:
        transcriber.decoder = own


def _tune_lm(
    transcriber: Transcriber,
    manifest: Path,
    lm: str,
    beam: int,
    alphas: tuple[float, ...] = TUNE_ALPHAS,
    betas: tuple[float, ...] = TUNE_BETAS,
) -> dict:
    """The (alpha, beta) of the grid with the lowest WER on a held-out manifest (not the test);
    ``at_edge`` names the weights chosen at the grid's largest value."""
    _, audios, references = _read(manifest, transcriber.tokenizer)
    best: dict = {}
    for alpha in alphas:
        for beta in betas:
            decoder = _beam(transcriber, lm, beam, alpha=alpha, beta=beta)
            wer = _wer(references, _texts_with(transcriber, decoder, audios))
            if not best or wer < best["dev_wer"]:
                best = {"alpha": alpha, "beta": beta, "dev_wer": wer}
    best["dev_wer_greedy"] = _wer(
        references, [r.text for r in transcriber.transcribe_arrays(audios)]
    )
    best["at_edge"] = [
        name for name, grid in (("alpha", alphas), ("beta", betas)) if best[name] == max(grid)
    ]
    best["manifest"] = str(manifest)
    print(f"LM weights tuned on {manifest}: {best}")
    return best


def _read(manifest: Path, tokenizer) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Audio paths, decoded clips and references normalized for the model's vocabulary."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    normalize = TextNormalizer.from_tokenizer(tokenizer)
    paths = [row["audio_filepath"] for row in rows]
    return paths, [load_audio(p) for p in paths], [normalize(row["text"]) for row in rows]


def _front_end_row(transcriber: Transcriber, audios, batch_size: int, repeats: int) -> dict:
    """RTF of the model's Hugging Face feature extractor and of the transcriber's front end."""
    batches = _length_sorted_batches(audios, batch_size)
    audio_seconds = sum(a.size for a in audios) / 16_000
    functions = {
        type(transcriber.feature_extractor).__name__: partial(
            extract_features, transcriber.feature_extractor
        ),
        f"transcriber ({type(transcriber.featurize).__name__})": transcriber.featurize,
    }
    row = {}
    with torch_threads(FEATURE_THREADS):
        for name, function in functions.items():
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                for batch in batches:
                    function(batch)
                runs.append(time.perf_counter() - start)
            row[name] = float(np.median(runs)) / audio_seconds
    print(f"front end RTF: {row}")
    return row


def _binary_lm_row(transcriber: Transcriber, audios, references, arpa: str, binary: str, args):
    """The same beam search with the ARPA file (our reader) and its KenLM binary (kenlm)."""
    weights = {"alpha": args.alpha, "beta": args.beta}
    texts = {
        name: _texts_with(transcriber, _beam(transcriber, lm, args.beam_width, **weights), audios)
        for name, lm in (("arpa", arpa), ("binary", binary))
    }
    row = {
        "decoder_lm": type(load_lm(binary)).__name__,
        "wer_arpa": _wer(references, texts["arpa"]),
        "wer_binary": _wer(references, texts["binary"]),
        "identical": sum(a == b for a, b in zip(texts["arpa"], texts["binary"], strict=True)),
    }
    print(f"KenLM binary vs ARPA: {row}")
    return row


def _long_audio_row(transcriber: Transcriber, audios, references, seconds: float) -> dict:
    """One long file made of consecutive test clips: chunked (30 s windows) vs one pass."""
    take, total = 0, 0
    while take < len(audios) and total < seconds * 16_000:
        total += audios[take].size
        take += 1
    long = np.concatenate(audios[:take])
    reference = " ".join(r for r in references[:take] if r)
    texts = {}
    for chunk_s in (30.0, seconds * 2):
        transcriber.chunking = ChunkOptions(chunk_s=chunk_s, stride_s=4.0)
        texts[chunk_s] = transcriber.transcribe_arrays([long])[0].text
    transcriber.chunking = ChunkOptions()
    chunked, whole = texts[30.0], texts[seconds * 2]
    row = {
        "audio_seconds": long.size / 16_000,
        "wer_chunked": _wer([reference], [chunked]),
        "wer_one_pass": _wer([reference], [whole]),
        "chunked_vs_one_pass_wer": _wer([whole], [chunked]) if whole else None,
    }
    print(f"long audio: {row}")
    return row


def _runtimes(args, torch_transcriber: Transcriber, audios, references) -> list[dict]:
    """PyTorch eager (its default threads and one thread), then each ONNX file."""
    runtimes = {"PyTorch eager": (torch_transcriber, args.threads)}
    if args.threads > 1:  # on a busy CPU, OpenMP threads can cost more than they bring
        runtimes["PyTorch eager (1 thread)"] = (torch_transcriber, 1)
    variants = (
        ("onnxruntime fp32", ONNX_FILE, FEATURES_AHEAD),
        ("onnxruntime int8", INT8_FILE, FEATURES_AHEAD),
        ("onnxruntime int8 (MatMul + Conv)", INT8_CONV_FILE, FEATURES_AHEAD),
        # what computing the features of a few batches ahead saves (Transcriber docstring)
        ("onnxruntime int8, features between model calls", INT8_FILE, 1),
    )
    for name, file, features_ahead in variants:
        transcriber = Transcriber.from_pretrained(
            args.onnx_dir,
            backend="onnx",
            onnx_file=file,
            num_threads=args.threads,
            batch_size=args.batch_size,
            features_ahead=features_ahead,
        )
        runtimes[name] = (transcriber, args.threads)
    rows = _rows(runtimes, audios, references, args.repeats)
    torch.set_num_threads(args.threads)
    return rows


def _sherpa_row(args, audios, references) -> dict | None:
    """sherpa-onnx's offline NeMo CTC recognizer on the same model (``--format sherpa-onnx``):
    its own front end, its greedy search, batches of ``--batch-size`` clips sorted by length.
    Timed after the other runtimes, over as many rounds (median)."""
    import sherpa_onnx

    folder = args.onnx_dir / "sherpa-onnx"
    try:
        report = export_sherpa(args.model, folder)
    except ModelError as err:
        print(f"no sherpa-onnx row: {err}", file=sys.stderr)
        return None
    recognizer = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(
        model=str(folder / ONNX_FILE),
        tokens=str(folder / TOKENS_FILE),
        feature_dim=report.feature_dim,
        num_threads=args.threads,
    )
    order = sorted(range(len(audios)), key=lambda i: audios[i].size, reverse=True)

    def transcribe() -> list[str]:
        texts = [""] * len(audios)
        for first in range(0, len(order), args.batch_size):
            rows = order[first : first + args.batch_size]
            streams = []
            for i in rows:
                stream = recognizer.create_stream()
                stream.accept_waveform(16_000, audios[i])
                streams.append(stream)
            recognizer.decode_streams(streams)
            for i, stream in zip(rows, streams, strict=True):
                texts[i] = " ".join(stream.result.text.split())
        return texts

    transcribe()  # warm-up
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        texts = transcribe()
        runs.append(time.perf_counter() - start)
    audio_seconds = sum(a.size for a in audios) / 16_000
    seconds = float(np.median(runs))
    row = {
        "runtime": f"sherpa-onnx {sherpa_onnx.__version__} (NeMo CTC, its own front end)",
        "rtf": seconds / audio_seconds,
        "wer": _wer(references, texts),
        "seconds": seconds,
        "audio_seconds": audio_seconds,
        "rtf_runs": [r / audio_seconds for r in runs],
        "texts": texts,
    }
    print(f"{row['runtime']}: RTF {row['rtf']:.5f}, WER {row['wer']:.2f}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hugging Face model folder or .ckpt")
    parser.add_argument("--manifest", type=Path, required=True, help="JSONL test manifest")
    parser.add_argument("--onnx-dir", type=Path, required=True, help="ONNX folder (made if absent)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--lm", default=None, help="ARPA word LM for the beam search rows")
    parser.add_argument("--beam-width", type=int, default=DEFAULT_DECODING.beam_width)
    parser.add_argument("--alpha", type=float, default=DEFAULT_DECODING.alpha)
    parser.add_argument("--beta", type=float, default=DEFAULT_DECODING.beta)
    parser.add_argument(
        "--tune-manifest",
        type=Path,
        default=None,
        help="held-out manifest (not the test) to choose alpha/beta on from a small grid",
    )
    parser.add_argument(
        "--kenlm-binary", default=None, help="the --lm file as a KenLM binary: same transcripts?"
    )
    parser.add_argument(
        "--long-s", type=float, default=120.0, help="long-audio check length (0: no check)"
    )
    parser.add_argument(
        "--sherpa",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add sherpa-onnx's row (log-mel models; exported to ONNX_DIR/sherpa-onnx)",
    )
    parser.add_argument("--result", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch_transcriber = Transcriber.from_pretrained(args.model, batch_size=args.batch_size)
    paths, audios, references = _read(args.manifest, torch_transcriber.tokenizer)
    if not (args.onnx_dir / INT8_FILE).is_file():
        report = export_onnx(args.model, args.onnx_dir, quantize="int8", check_audio=paths[:16])
        print(report.render())
    if not (args.onnx_dir / INT8_CONV_FILE).is_file():
        quantize_int8(args.onnx_dir / ONNX_FILE, args.onnx_dir / INT8_CONV_FILE, ("MatMul", "Conv"))
    load = os.getloadavg()
    print(
        f"{len(audios)} clips, {sum(a.size for a in audios) / 16_000:.1f} s of audio, "
        f"{args.threads} threads, load average {load[0]:.2f}",
        file=sys.stderr,
    )
    results = _runtimes(args, torch_transcriber, audios, references)
    sherpa = _sherpa_row(args, audios, references) if args.sherpa else None
    results += [sherpa] if sherpa else []
    reference_texts = results[0]["texts"]
    for row in results:
        texts = row.pop("texts")
        row["identical_to_pytorch"] = sum(
            a == b for a, b in zip(texts, reference_texts, strict=True)
        )
        row["cer_vs_pytorch"] = 100.0 * jiwer.cer(reference_texts, texts)
        row["speedup"] = results[0]["rtf"] / row["rtf"]
        if "model_rtf" in row:  # sherpa-onnx's row has no model-alone timing
            row["model_speedup"] = results[0]["model_rtf"] / row["model_rtf"]
    output = {
        "clips": len(audios),
        "threads": args.threads,
        "load_average": load,
        "runtimes": results,
    }
    output["front_end"] = _front_end_row(torch_transcriber, audios, args.batch_size, args.repeats)
    if args.long_s > 0:
        output["long_audio"] = _long_audio_row(torch_transcriber, audios, references, args.long_s)
    if args.lm:
        fp32 = Transcriber.from_pretrained(
            args.onnx_dir, backend="onnx", num_threads=args.threads, batch_size=args.batch_size
        )
        greedy = next(r["wer"] for r in results if r["runtime"] == "onnxruntime fp32")
        output["decoding"] = [{"decoding": "greedy", "wer": greedy}] + _lm_rows(
            fp32, audios, references, args.lm, args.beam_width, args.alpha, args.beta
        )
        if args.kenlm_binary:
            output["kenlm_binary"] = _binary_lm_row(
                fp32, audios, references, args.lm, args.kenlm_binary, args
            )
        if args.tune_manifest:
            tuned = _tune_lm(fp32, args.tune_manifest, args.lm, args.beam_width)
            output["lm_tuning"] = tuned
            output["decoding"] += _lm_rows(
                fp32,
                audios,
                references,
                args.lm,
                args.beam_width,
                tuned["alpha"],
                tuned["beta"],
                with_plain_beam=False,
            )
    print(json.dumps(output, indent=2))
    if args.result:
        args.result.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
