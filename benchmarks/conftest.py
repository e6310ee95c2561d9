"""Benchmarks double as tests: speed goals apply only when pytest-benchmark is timing."""

from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent / "results"


@pytest.fixture
def speed_goal(benchmark):
    """Assert a timing goal only when benchmarking is on (not under --benchmark-disable)."""

    def check(ok: bool, message: str) -> None:
        if not benchmark.disabled:
            assert ok, message

    return check


@pytest.fixture
def results_folder(request):
    """Where a benchmark writes its committed tables: benchmarks/results with --update-results, else None
    (a test run, a timing run or CI never rewrites them)."""
    if not request.config.getoption("--update-results"):
        return None
    RESULTS.mkdir(exist_ok=True)
    return RESULTS
