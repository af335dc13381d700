"""The benchmarks' timing helpers: median and percentile of repeated calls."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms(action: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls of ``action``, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(name: str, samples: list[float], width: int = 40) -> float:
    """Print p50 and p99 of ``samples`` (seconds) in ms; answer the p50 in seconds."""
    p50 = statistics.median(samples)
    print(f"{name:<{width}} n={len(samples):<3} p50 {p50 * 1000:8.1f} ms   "
          f"p99 {percentile(samples, 0.99) * 1000:8.1f} ms")
    return p50
