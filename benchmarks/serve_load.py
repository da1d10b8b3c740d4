"""Load test of ``asr-lightning serve``: concurrent clients, valid and malformed audio.

    python benchmarks/serve_load.py                     # newest runs/**/hf_model, 300 requests
    python benchmarks/serve_load.py --model DIR --audio 'an4/wav/an4test_clstk/*/*.sph' --write

For each setting it starts ``asr-lightning serve`` in a subprocess, sends the same shuffled mix
of requests from ``--clients`` threads (about 20% malformed: garbage WAV, broken JSON, bad
base64, unsupported type, oversize body), and checks that no answer is a 5xx, none is missing,
every malformed request got its 4xx and every valid one its transcript, equal to the offline
``Transcriber``'s. It reports throughput and p50/p99 latency; ``--write`` puts the table in
BENCHMARKS.md under "## Serving load test".

Settings: the ASGI server (uvicorn) with dynamic batching on (max batch 8, max wait 15 ms) and
off, with two workers, and the baseline: the standard-library ``ThreadingHTTPServer`` this
project served with before, run from its last commit (``--baseline-rev``, extracted with
``git archive``) on the same model, requests and machine, interleaved run by run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_lightning.audio.decode import load_audio
from asr_lightning.serve.loading import load_transcriber

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Serving load test"
#: The last commit whose ``serve`` is the standard library's ThreadingHTTPServer.
BASELINE_REV = "50a5957"
CONTENT_TYPES = {".opus": "audio/ogg", ".ogg": "audio/ogg", ".wav": "audio/wav"}


@dataclass(frozen=True)
class Setting:
    label: str
    baseline: bool  # the old server, from BASELINE_REV
    max_batch: int
    max_wait_ms: float
    workers: int = 1


SETTINGS = (
    Setting("ASGI, batching on", False, 8, 15.0),
    Setting("ASGI, batching off", False, 1, 0.0),
    Setting("ASGI, 2 workers, batching on", False, 8, 15.0, workers=2),
    Setting("stdlib (baseline), batching on", True, 8, 15.0),
    Setting("stdlib (baseline), batching off", True, 1, 0.0),
)
MALFORMED_SHARE = 0.2
MAX_BODY_MB = 1.0
STARTUP_TIMEOUT_S = 180.0
BATCHER_LINE = re.compile(r"in \d+ batches \(mean ([0-9.]+)")


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str
    expected_status: int
    expected_text: str | None = None
    expected_confidence: float | None = None


def newest_model() -> Path:
    found = [p for p in REPO.glob("runs/**/hf_model") if (p / "config.json").is_file()]
    found += [p.parent for p in REPO.glob("runs/**/asr_lightning.json")]
    if not found:
        raise SystemExit("no runs/**/hf_model or ONNX folder: pass --model")
    return max(found, key=lambda p: p.stat().st_mtime)


def build_requests(model: Path, clips: list[Path], total: int, seed: int) -> list[Request]:
    """Valid clips (Ogg files and base64 JSON) with their offline transcripts, and bad ones."""
    transcriber = load_transcriber(model)
    expected = transcriber.transcribe_arrays([load_audio(c) for c in clips])
    rng = random.Random(seed)
    malformed = [
        Request(b"RIFF" + os.urandom(2000), "audio/wav", 400),
        Request(b'{"audio": "not base64!"}', "application/json", 400),
        Request(b"{broken json", "application/json", 400),
        Request(b"hello", "text/plain", 415),
        Request(os.urandom(int(MAX_BODY_MB * 1024 * 1024) + 1), "audio/wav", 413),
    ]
    requests = []
    for index in range(total):
        if rng.random() < MALFORMED_SHARE:
            requests.append(malformed[index % len(malformed)])
            continue
        which = rng.randrange(len(clips))
        data = clips[which].read_bytes()
        text, confidence = expected[which].text, expected[which].confidence
        if rng.random() < 0.5:
            kind = CONTENT_TYPES.get(clips[which].suffix, "application/octet-stream")
            requests.append(Request(data, kind, 200, text, confidence))
        else:
            body = json.dumps({"audio": base64.b64encode(data).decode()}).encode()
            requests.append(Request(body, "application/json", 200, text, confidence))
    return requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def extract_baseline(rev: str, into: Path) -> Path:
    """The package as it was at ``rev`` (``git archive``), to run the old server from."""
    archive = into / "baseline.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "asr_lightning"], stdout=out,
                       check=True)  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(into / "baseline", filter="data")
    return into / "baseline"


def start_server(model: Path, setting: Setting, code: Path):
    port = _free_port()
    command = [sys.executable, "-m", "asr_lightning.cli", "serve", str(model), "--port", str(port)]
    command += [
        "--batching.max_batch_size",
        str(setting.max_batch),
        "--batching.max_wait_ms",
        str(setting.max_wait_ms),
    ]
    command += ["--max-body-mb", str(MAX_BODY_MB)]
    if setting.workers > 1:
        command += ["--workers", str(setting.workers)]
    env = {**os.environ, "PYTHONPATH": str(code)}
    log = open(f"/tmp/serve_load_{port}.log", "w")  # noqa: SIM115 (lives with the process)
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5):
                return process, url, log.name
        except (urllib.error.URLError, OSError):  # refused, or queued until a worker is up
            if process.poll() is not None:
                raise SystemExit(f"the server exited; see {log.name}") from None
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not come up")


def send(url: str, request: Request) -> tuple[int, dict, float]:
    http = urllib.request.Request(
        url + "/invocations",
        data=request.body,
        method="POST",
        headers={"Content-Type": request.content_type},
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(http, timeout=300) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    return status, json.loads(body), time.perf_counter() - start


def run_setting(model: Path, requests: list[Request], clients: int, setting: Setting, code: Path):
    process, url, log = start_server(model, setting, code)
    try:
        send(url, next(r for r in requests if r.expected_status == 200))  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda r: send(url, r), requests))
        elapsed = time.perf_counter() - start
    finally:
        process.send_signal(signal.SIGTERM)  # graceful: the batcher logs its counts
        process.wait(timeout=60)
    result = check(requests, answers, elapsed)
    found = [float(m) for m in BATCHER_LINE.findall(Path(log).read_text())]  # one per worker
    result["mean_batch"] = float(np.mean(found)) if found else None
    return result


def check(requests: list[Request], answers: list, elapsed: float) -> dict:
    assert len(answers) == len(requests), "dropped requests"
    server_errors = [a for a in answers if a[0] >= 500]
    assert not server_errors, f"5xx answers: {server_errors[:3]}"
    for request, (status, body, _) in zip(requests, answers, strict=True):
        assert status == request.expected_status, (status, body, request.content_type)
        if status == 200:
            assert body["text"] == request.expected_text, (body, request.expected_text)
            confidence = body.get("confidence", request.expected_confidence)  # batched: ~equal
            assert abs(confidence - request.expected_confidence) < 1e-3, body
        else:
            assert body["status"] == status and body["error"]
    valid = [a[2] for r, a in zip(requests, answers, strict=True) if r.expected_status == 200]
    every = [a[2] for a in answers]
    return {
        "requests": len(requests),
        "valid": len(valid),
        "malformed": len(requests) - len(valid),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(requests) / elapsed, 2),
        "valid_p50_ms": round(1000 * float(np.percentile(valid, 50)), 1),
        "valid_p99_ms": round(1000 * float(np.percentile(valid, 99)), 1),
        "all_p50_ms": round(1000 * float(np.percentile(every, 50)), 1),
        "all_p99_ms": round(1000 * float(np.percentile(every, 99)), 1),
    }


def render(
    model: Path, results: dict, args: argparse.Namespace, load: str, clips, nonempty: int
) -> str:
    shown = model.relative_to(REPO) if model.is_relative_to(REPO) else model
    lines = [
        SECTION,
        "",
        f"`ASR_LIGHTNING_DATA=../shared/data python benchmarks/serve_load.py --model {shown} "
        f"--audio '{args.audio}' --requests {args.requests} --clients {args.clients}"
        f" --repeats {args.repeats} --write`: "
        f"{len(clips)} clips of `{args.audio}` ({args.clips_seconds:.1f} s of audio in all); "
        f"2 shared CPU cores, `uptime` at the start: `{load}`. Every valid answer equalled "
        f"the offline Transcriber's ({nonempty} valid requests had a non-empty transcript); "
        "no 5xx, none dropped, every malformed request got its 4xx.",
        "",
        f"Medians of {args.repeats} runs per setting, interleaved (each run's throughput in "
        "brackets); mean batch = requests per model call, from the server's log. Baseline: "
        f"the standard-library server of {args.baseline_rev}, run from `git archive`.",
        "",
        "| setting | requests (valid / malformed) | throughput (req/s) | mean batch "
        "| valid p50 / p99 (ms) | all p50 / p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for label, runs in results.items():

        def median(key: str, runs=runs) -> float:
            return round(float(np.median([run[key] for run in runs])), 1)

        first = runs[0]
        throughputs = ", ".join(f"{run['throughput_rps']:.1f}" for run in runs)
        lines.append(
            f"| {label} | {first['requests']} ({first['valid']} / {first['malformed']}) "
            f"| {median('throughput_rps')} ({throughputs}) | {median('mean_batch')} "
            f"| {median('valid_p50_ms')} / {median('valid_p99_ms')} "
            f"| {median('all_p50_ms')} / {median('all_p99_ms')} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replaces this benchmark's section of BENCHMARKS.md (or appends it), nothing else."""
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("" if end < 0 else old[end:])
    path.write_text(new, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: newest under runs/")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--clips", type=int, default=16, help="distinct valid clips")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting, interleaved")
    parser.add_argument("--audio", default="data/quickstart/audio/test-*.opus",
                        help="clips (glob) under the repo or $ASR_LIGHTNING_DATA")  # fmt: skip
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="commit of the old server")
    parser.add_argument("--only", nargs="*", default=None, help="labels of settings to run")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    model = (args.model or newest_model()).resolve()
    data = Path(os.environ.get("ASR_LIGHTNING_DATA", REPO.parent / "shared" / "data"))
    root = REPO if list(REPO.glob(args.audio)) else data
    clips = sorted(root.glob(args.audio))[: args.clips]
    if not clips:
        raise SystemExit(f"no clips match {args.audio} under {REPO} or {data}")
    args.clips_seconds = sum(load_audio(c).size for c in clips) / 16_000
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"model {model}; {load}", flush=True)
    requests = build_requests(model, clips, args.requests, args.seed)
    settings = [s for s in SETTINGS if args.only is None or s.label in args.only]
    results: dict[str, list[dict]] = {s.label: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = extract_baseline(args.baseline_rev, Path(tmp))
        for _ in range(args.repeats):
            for setting in settings:
                code = baseline if setting.baseline else REPO
                result = run_setting(model, requests, args.clients, setting, code)
                results[setting.label].append(result)
                print(setting.label, json.dumps(result), flush=True)
    nonempty = sum(1 for r in requests if r.expected_text)
    text = render(model, results, args, load, clips, nonempty)
    print(text)
    if args.write:
        write_section(REPO / "BENCHMARKS.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
