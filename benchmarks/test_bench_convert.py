"""The converter over small re-implementations of public CNN families (benchmarks/architectures.py):
how many it turns into multi-exit networks whose last exit reproduces the original, before and
after tracing untraceable blocks whole and optional arguments at their defaults. Asserted, and
no network is ever converted wrongly: each is a network that reproduces its original, or a
ConversionError."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import fx  # noqa: E402

from benchmarks.architectures import ARCHITECTURES  # noqa: E402
from einet.models import ConversionError, convert  # noqa: E402

REFUSED = {"control flow in forward itself"}  # its own forward branches on the data: no trace can follow it


def converted(name: str) -> tuple[bool, bool]:
    """(converted by the previous converter, which needed the whole forward to trace; converted now)."""
    torch.manual_seed(0)
    model = ARCHITECTURES[name]().eval()
    x = torch.randn(2, 3, 32, 32)
    try:
        fx.symbolic_trace(model)
        whole = True
    except Exception:
        whole = False
    try:
        network = convert(model, x)
    except ConversionError:
        return whole, False
    with torch.no_grad():  # never silently wrong: the last exit is the original
        y = torch.randn(3, 3, 32, 32)
        assert torch.allclose(network(y)[-1], model(y), rtol=1e-4, atol=1e-5)
    return whole, True


def test_the_share_of_public_families_converted_exactly(benchmark):
    results = benchmark.pedantic(lambda: {name: converted(name) for name in ARCHITECTURES}, rounds=1, iterations=1)
    before = sum(whole and now for whole, now in results.values())
    after = sum(now for _, now in results.values())
    print(f"\nconverted exactly: before {before} of {len(results)}, after {after} of {len(results)}")
    assert {name for name, (_, now) in results.items() if not now} == REFUSED
    assert (before, after) == (len(ARCHITECTURES) - 4, len(ARCHITECTURES) - 1)
