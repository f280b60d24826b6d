"""Shared helpers of the benchmark scripts: interleaved timing, medians and a one-line machine description.

Not a benchmark itself; the scripts beside it import it (``python benchmarks/X.py`` puts this folder on
the import path), and so do those in research/benchmarks/ (which insert this folder).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads (None keeps torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def machine() -> str:
    """CPU count, processor, torch version and the threads torch uses."""
    cpu = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        cpu += ", avx512_bf16" if "avx512_bf16" in info else ""
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu}), no GPU used; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int,
                progress: bool = True) -> dict[str, list[float]]:
    """Wall times (seconds) of every contender over ``rounds`` rounds, after ``warmup`` untimed rounds.

    Each round runs every contender once, one after another (A, B, C, …); odd rounds run them in reverse
    order, so a contender is not always the one that follows the same neighbour.
    """
    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        took: dict[str, float] = {}
        for name in order:
            t0 = time.perf_counter()
            contenders[name]()
            took[name] = time.perf_counter() - t0
        if r >= warmup:
            for name in names:
                times[name].append(took[name])
        if progress:
            tag = f"warm-up {r + 1}" if r < warmup else f"round {r - warmup + 1}"
            print(f"  {tag}: " + ", ".join(f"{k} {took[k]:.2f}" for k in names) + " (s)", flush=True)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i] (the two were timed in the same round, side by side)."""
    return statistics.median(x / y for x, y in zip(a, b))
