"""What every `python -m benchmarks.<name>` shares: one thread, a matmul probe, a FLOP counter that knows the
CPU attention kernel, alternating timed rounds, and the one JSON line a benchmark ends with."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from protobench.flops import count_flops  # noqa: E402,F401 - the one FLOP counter, shared with the run's clock


def one_thread() -> None:
    """Ratios, not absolute speeds, are what a shared machine can measure: one thread per process."""
    torch.set_num_threads(1)


def matmul_probe(n: int = 2048, reps: int = 3, dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """FLOP/s of an n×n matmul, best of `reps`: the pace this process can reach right now."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], steps: int, device="cpu") -> float:
    """Seconds per call of `fn`, over `steps` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, steps: int, warmup: int = 2,
              probe: Callable[[], float] | None = None, device="cpu") -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per step of each contender, A/B alternated within each round (so load hits both alike),
    and the probe's FLOP/s taken in every round."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    probes: list[float] = []
    for r in range(rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            times[name].append(timed(contenders[name], steps, device))
        if probe is not None:
            probes.append(probe())
        progress(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in times.items()))
    return times, probes


def median(values: list[float]) -> float:
    return statistics.median(values)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """The machine-readable result: always the last line on stdout."""
    print(json.dumps(result, sort_keys=False), flush=True)
