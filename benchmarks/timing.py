"""Timing helpers for benchmarks that compare two implementations in the same run."""

from __future__ import annotations

import timeit
from typing import Callable


def best_time(call: Callable[[], object], number: int = 1, repeat: int = 5) -> float:
    """Seconds per call, the minimum over `repeat` timings of `number` calls (least disturbed by noise)."""
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number


def median_seconds(benchmark) -> float:
    """The median of a finished pytest-benchmark run, in seconds."""
    return float(benchmark.stats.stats.median)
