"""Synthetic planning problems, and exit-time distributions scaled to a model's inference time.

Used by the tests and benchmarks, and handy for trying the planner before any
model is profiled. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .distributions import RELATIVE_KINDS, relative_distribution
from .errors import EinetValueError
from .planner import Deterministic, Distribution, Empirical, ETProfile

DISTRIBUTION_KINDS = (*RELATIVE_KINDS, "empirical", "deterministic")  # the named kinds and two stand-ins


def exit_distribution(kind: str, total: float, rng: np.random.Generator | None = None) -> Distribution:
    """A forced-exit distribution relative to `total`, the full inference time in seconds.

    The named kinds of :mod:`einet.distributions` over the horizon `total`; empirical: 200
    uniform draws on [0, total] (a stand-in trace);
    deterministic: a deadline at 0.6 total.
    """
    if not total > 0:
        raise EinetValueError(f"total must be > 0, got {total}")
    if kind in RELATIVE_KINDS:
        return relative_distribution(kind, total)
    if kind == "empirical":
        return Empirical((rng or np.random.default_rng(0)).uniform(0.0, total, 200))
    if kind == "deterministic":
        return Deterministic(0.6 * total)
    raise EinetValueError(f"unknown distribution kind {kind!r}: expected one of {', '.join(DISTRIBUTION_KINDS)}")


@dataclass(frozen=True)
class PlanningProblem:
    """One sample's planning inputs: exit scores, block times and the exit-time distribution."""

    scores: np.ndarray
    et: ETProfile
    dist: Distribution


def random_problem(rng: np.random.Generator, num_blocks: int, kind: str = "uniform") -> PlanningProblem:
    """Block times like a fine-grained CNN's; exit scores rising with depth, plus noise."""
    conv = rng.uniform(0.2, 1.0, num_blocks)
    branch = rng.uniform(0.05, 0.6, num_blocks) * conv
    rising = np.sort(rng.uniform(0.1, 1.0, num_blocks))
    scores = np.clip(rising + rng.normal(0.0, 0.1, num_blocks), 0.0, 1.0)
    et = ETProfile(conv, branch)
    return PlanningProblem(scores, et, exit_distribution(kind, et.total(), rng))
