"""Whether bf16 is fast on this CPU, and what it costs when it is not.

Lightning runs ``precision: 16-mixed`` on a CPU as ``bf16-mixed``. CPUs with AVX512-BF16 or AMX
(Intel Cooper Lake, Sapphire Rapids and newer; AMD Zen 4 and newer) and Arm CPUs with the BF16
extension (Graviton 3 and newer) run bf16 matrix products natively; on others (AVX2-only x86)
PyTorch emulates them, many times slower than fp32: a 94 M-parameter wav2vec2-base did not
finish 4 training steps in 15 minutes in bf16-mixed on such a CPU, against ~7 s per step in fp32.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

#: Rows of the timed matrix product (a batch of ~10 s of 50 Hz encoder frames).
PROBE_ROWS = 512
#: Timed repetitions of each precision; the fastest counts.
PROBE_REPEATS = 3
#: bf16 taking longer than this many times fp32 is worth a warning (native bf16: ~0.2x).
SLOW_BF16 = 1.5
_CPUINFO = Path("/proc/cpuinfo")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return "bf16" in _cpu_flags()


def _cpu_flags() -> set[str]:
    """The feature flags the kernel lists for the first CPU (empty where there is no list)."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


#: The narrowest feed-forward product the bf16 probe times.
MIN_PROBE_HIDDEN = 256


def bf16_slowdown(hidden_size: int) -> float:
    """How many times longer a feed-forward matrix product takes in bf16 autocast than in fp32.

    Measured on this CPU now: ``(PROBE_ROWS, hidden) @ (hidden, 4 * hidden)``, the fastest of
    :data:`PROBE_REPEATS` runs of each. Well under a second where bf16 is native.

    Args:
        hidden_size: the model's hidden size (768 for wav2vec2-base).
    """
    # a tiny hidden size would time the dispatch, not the arithmetic: probe at least this wide
    hidden_size = max(hidden_size, MIN_PROBE_HIDDEN)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(PROBE_ROWS, hidden_size, generator=generator)
    weight = torch.randn(4 * hidden_size, hidden_size, generator=generator)

    def best(autocast: bool) -> float:
        times = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for _ in range(PROBE_REPEATS):
                start = time.perf_counter()
                torch.nn.functional.linear(inputs, weight)
                times.append(time.perf_counter() - start)
        return min(times)

    best(True)  # first calls pay one-off dispatch and packing costs
    return best(True) / best(False)


def bf16_warning(precision: str, hidden_size: int) -> str | None:
    """A warning for bf16 training where bf16 is slower than fp32, with its measured cost.

    The cost is measured, not guessed from CPU flags: it also catches bf16 kernels limited by
    ``ONEDNN_MAX_CPU_ISA`` or a CPU this module's flag checks do not know.

    Args:
        precision: the trainer's precision (``bf16-mixed``, ``bf16-true``, ``32-true``...).
        hidden_size: the model's hidden size, for the measurement.
    """
    if "bf16" not in str(precision):
        return None
    slowdown = bf16_slowdown(hidden_size)
    if slowdown <= SLOW_BF16:
        return None
    why = "this CPU has no AVX512-BF16 or AMX" if not native_bf16() else "bf16 kernels are limited"
    return (
        f"trainer.precision is {precision}, but bf16 is emulated here ({why}): a "
        f"{hidden_size} x {4 * hidden_size} matrix product of this model's size just took "
        f"{slowdown:.1f}x as long in bf16 as in fp32. Train with --trainer.precision 32-true on "
        "this machine (16-mixed also runs as bf16-mixed on a CPU)."
    )
