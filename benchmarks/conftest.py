"""Benchmarks double as tests: speed goals apply only when pytest-benchmark is timing."""

import pytest


@pytest.fixture
def speed_goal(benchmark):
    """Assert a timing goal only when benchmarking is on (not under --benchmark-disable)."""

    def check(ok: bool, message: str) -> None:
        if not benchmark.disabled:
            assert ok, message

    return check
