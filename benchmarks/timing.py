"""Timing helpers for benchmarks that compare two implementations in the same run, and the mark of
a speed goal known to be unmet."""

from __future__ import annotations

import timeit
from typing import Callable

import pytest


def best_time(call: Callable[[], object], number: int = 1, repeat: int = 5) -> float:
    """Seconds per call, the minimum over `repeat` timings of `number` calls (least disturbed by noise)."""
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number


def median_seconds(benchmark) -> float:
    """The median of a finished pytest-benchmark run, in seconds."""
    return float(benchmark.stats.stats.median)


def unmet_speed_goal(measured: str) -> pytest.MarkDecorator:
    """A speed goal docs/results.md reports unmet (`measured`: the figure and where): expected to fail
    while benchmarking, strictly, so that `--benchmark-only` passes and a goal that starts being met
    fails until the mark goes. Under --benchmark-disable speed goals are not asserted: no mark."""
    return pytest.mark.xfail("not config.getoption('benchmark_disable')", strict=True, reason=measured)
