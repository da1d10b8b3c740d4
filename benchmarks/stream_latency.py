"""Latency of live transcription (``/stream``): real AN4 clips streamed to a real server.

    python benchmarks/stream_latency.py --model runs/.../hf_model          # real time, 1 stream
    python benchmarks/stream_latency.py --model DIR --clips 20 --streams 4 --speed 1 --speed 0
    python benchmarks/stream_latency.py --model DIR --clips 20 --join 20   # one 59 s stream

It starts ``asr-lightning serve MODEL`` in a subprocess and streams AN4 test clips with the
``websockets`` client as 16 kHz s16le frames of ``--chunk-ms``, paced at ``--speed`` times real
time (0: as fast as the socket takes them), ``--streams`` at a time. For every stream it
records:

- final latency: from sending ``{"event": "end"}`` to the final transcript arriving;
- partial latency: from sending the frame that completed the audio a partial covers (its
  ``duration_s``) to the partial arriving;

and checks that every final equals the offline Transcriber's transcript of the same PCM. It
prints p50/p90 of both per speed, as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
from serve_load import Setting, start_server  # the script's folder is on sys.path

from asr_lightning.audio.decode import load_audio
from asr_lightning.serve.loading import load_transcriber
from asr_lightning.serve.requests import _decode_pcm

REPO = Path(__file__).resolve().parent.parent
RATE = 16_000
AN4_TEST = Path("an4/wav/an4test_clstk")


def newest_model() -> Path:
    found = [p for p in REPO.glob("runs/**/hf_model") if (p / "config.json").is_file()]
    if not found:
        raise SystemExit("no runs/**/hf_model: pass --model")
    return max(found, key=lambda p: p.stat().st_mtime)


def data_root() -> Path:
    return Path(os.environ.get("ASR_LIGHTNING_DATA", REPO / "data"))


def an4_clips(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` AN4 test clips (sorted by name), as 16 kHz s16le PCM."""
    paths = sorted((data_root() / AN4_TEST).glob("*/*.sph"))[:count]
    if not paths:
        raise SystemExit(f"no AN4 test clips under {data_root() / AN4_TEST}")
    clips = []
    for path in paths:
        audio = load_audio(path, sample_rate=RATE)
        clips.append((path.name, (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()))
    return clips


async def stream_clip(url: str, pcm: bytes, chunk_ms: float, speed: float) -> dict:
    """Streams one clip; its final frame, final latency and partial latencies."""
    from websockets.asyncio.client import connect

    step = int(RATE * chunk_ms / 1000) * 2
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, when)
    partials: list[float] = []
    final: dict = {}
    ended_at = 0.0
    async with connect(url.replace("http://", "ws://") + f"/stream?sample_rate={RATE}") as ws:

        async def receive() -> None:
            async for message in ws:
                frame = json.loads(message)
                now = time.perf_counter()
                if "partial" in frame:  # the frame that completed its audio
                    covered = frame["duration_s"]
                    sent = next(t for audio_s, t in sent_at if audio_s >= covered - 1e-9)
                    partials.append(now - sent)
                else:
                    final.update(frame, arrived=now)

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for offset in range(0, len(pcm), step):
            frame = pcm[offset : offset + step]
            audio_s = (offset + len(frame)) / 2 / RATE
            if speed > 0:  # the frame is sent once its audio has been "spoken"
                await asyncio.sleep(max(0.0, start + audio_s / speed - time.perf_counter()))
            await ws.send(frame)
            sent_at.append((audio_s, time.perf_counter()))
        ended_at = time.perf_counter()
        await ws.send(json.dumps({"event": "end"}))
        await receiver
    if "final" not in final:
        raise SystemExit(f"no final transcript: {final}")
    return {"final": final, "latency": final["arrived"] - ended_at, "partials": partials}


async def run_speed(url: str, clips, chunk_ms: float, speed: float, streams: int) -> list[dict]:
    gate = asyncio.Semaphore(streams)

    async def one(pcm: bytes) -> dict:
        async with gate:
            return await stream_clip(url, pcm, chunk_ms, speed)

    return list(await asyncio.gather(*(one(pcm) for _, pcm in clips)))


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p90 = (1000 * float(np.percentile(values, q)) for q in (50, 90))
    return f"{p50:.0f} / {p90:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="default: the newest runs/**/hf_model")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--streams", type=int, default=1, help="streams at a time")
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    parser.add_argument(
        "--speed", type=float, action="append", help="x real time (0: unpaced); repeatable"
    )
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument(
        "--join", type=int, default=1, help="streams of this many clips in a row (long streams)"
    )
    args = parser.parse_args()
    model = args.model or newest_model()
    speeds = args.speed or [1.0]
    clips = an4_clips(args.clips)
    clips = [
        (
            "+".join(n for n, _ in clips[i : i + args.join]),
            b"".join(p for _, p in clips[i : i + args.join]),
        )
        for i in range(0, len(clips), args.join)
    ]
    audio_s = sum(len(pcm) for _, pcm in clips) / 2 / RATE
    transcriber = load_transcriber(model)
    expected = [
        r.text
        for r in transcriber.transcribe_arrays([_decode_pcm(pcm, RATE, RATE) for _, pcm in clips])
    ]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    setting = Setting("stream", baseline=False, max_batch=args.max_batch, max_wait_ms=10.0)
    process, url, _ = start_server(model, setting, REPO)  # serve_load.py's, log in /tmp
    rows = []
    try:
        asyncio.run(run_speed(url, clips[:1], args.chunk_ms, 0.0, 1))  # warm-up
        for speed in speeds:
            results = asyncio.run(run_speed(url, clips, args.chunk_ms, speed, args.streams))
            finals = [r["final"]["final"] for r in results]
            mismatched = sum(f != e for f, e in zip(finals, expected, strict=True))
            assert not mismatched, f"{mismatched} finals differ from the offline transcripts"
            partials = [p for r in results for p in r["partials"]]
            rows.append(
                f"| {speed:g}x{' (unpaced)' if speed == 0 else ''} | {args.streams} "
                f"| {len(results)} "
                f"| {percentiles([r['latency'] for r in results])} "
                f"| {percentiles(partials)} | {len(partials)} |"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    shown = model.relative_to(REPO) if model.is_relative_to(REPO) else model
    print(f"model: {shown}; {args.clips} AN4 test clips in {len(clips)} streams, {audio_s:.1f} s")
    print(f"{args.chunk_ms:g} ms frames; uptime at the start: {load}")
    print(f"every final equalled the offline transcript ({sum(map(bool, expected))} non-empty)")
    print()
    print("| speed | at a time | streams | final latency p50 / p90 (ms) "
          "| partial latency p50 / p90 (ms) | partials |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
