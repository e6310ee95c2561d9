"""Hypothesis strategies shared by the planner's property tests."""

from __future__ import annotations

from hypothesis import strategies as st

import einet
from einet.synthetic import DISTRIBUTION_KINDS


def exit_time_distribution(draw: st.DrawFn, total: float, max_samples: int = 30) -> einet.Distribution:
    """Any of the five exit-time distributions, scaled to an inference of `total` seconds."""
    kind = draw(st.sampled_from(DISTRIBUTION_KINDS))
    if kind == "uniform":
        low = draw(st.floats(-total, total))
        return einet.Uniform(low, low + draw(st.floats(1e-3, 2 * total)))
    if kind == "normal":
        return einet.Normal(draw(st.floats(0.0, total)), draw(st.floats(total / 50, total)))
    if kind == "exponential":
        return einet.Exponential(draw(st.floats(0.1, 10.0)) / total)
    if kind == "empirical":
        return einet.Empirical(draw(st.lists(st.floats(0.0, total), min_size=1, max_size=max_samples)))
    return einet.Deterministic(draw(st.floats(0.0, total)))
