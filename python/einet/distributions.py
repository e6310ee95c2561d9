"""Exit-time distributions: the one registry of the named kinds (each relative to a horizon, the full
inference time), and drawing exit times from any distribution. The distribution types themselves
are native (:mod:`einet.planner`). Numpy only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import EinetTypeError, EinetValueError
from .planner import Deterministic, Distribution, Empirical, ETProfile, Exponential, Normal, Uniform

# The named kinds, each made from a horizon H in seconds: uniform on [0, H], normal N(H/2, H/4)
# truncated at 0, exponential with mean H/2. Configs, bundles and the command line name these.
RELATIVE_KINDS: dict[str, Callable[[float], Distribution]] = {
    "uniform": lambda horizon: Uniform(0.0, horizon),
    "normal": lambda horizon: Normal(horizon / 2, horizon / 4),
    "exponential": lambda horizon: Exponential(2.0 / horizon),
}


def full_inference_time(et: ETProfile) -> float:
    """The multi-exit network's full inference: every block and every branch (static 100%).
    Exit-time distributions are expressed relative to it, so a policy that skips branches can
    reach the last exit inside the horizon, and the single-exit model finishes at
    (sum conv + last branch) / total of it."""
    return et.total()


def relative_distribution(kind: str, full_time: float, scale: float = 1.0) -> Distribution:
    """Exit time relative to the full inference time T: uniform on [0, sT], normal N(sT/2, sT/4)
    truncated at 0, exponential with mean sT/2."""
    if not full_time > 0 or not scale > 0:
        raise EinetValueError(f"full_time and scale must be > 0, got {full_time} and {scale}")
    horizon = scale * full_time
    if kind not in RELATIVE_KINDS:
        raise EinetValueError(f"unknown distribution kind {kind!r}: expected {', '.join(RELATIVE_KINDS)}")
    return RELATIVE_KINDS[kind](horizon)


def sample_exit_times(dist: Distribution, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draws of tau from any of einet's distributions."""
    sampler = _SAMPLERS.get(type(dist))
    if sampler is None:
        raise EinetTypeError(f"unknown distribution {dist!r}")
    return sampler(dist, size, rng)


def _truncated_normal(mean: float, std: float, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draws of N(mean, std) truncated to t >= 0, in a bounded amount of work however little mass lies
    above 0 (redrawing negative draws until none is left never ends for Normal(-8.2, 1)).

    With mean >= 0 (at least half the mass above 0) negative draws are redrawn at most
    ``_REDRAWS`` times, the draws einet has always made; what is left, and every draw when the
    mass above 0 is smaller, comes from the inverse CDF of the upper tail,
    t = mean - std * Phi^-1(u * Phi(mean / std)) with u in (0, 1], accurate however small
    Phi(mean / std) is."""
    from statistics import NormalDist

    unit = NormalDist()
    above = unit.cdf(mean / std)  # the mass above 0
    if not above > 0:
        raise EinetValueError(f"Normal({mean}, {std}) has no mass above 0 to draw exit times from")
    draws = rng.normal(mean, std, size) if above >= 0.5 else np.full(size, -1.0)
    for _ in range(_REDRAWS if above >= 0.5 else 0):
        negative = draws < 0
        if not negative.any():
            return draws
        draws[negative] = rng.normal(mean, std, int(negative.sum()))
    negative = draws < 0
    quantiles = np.minimum((1.0 - rng.random(int(negative.sum()))) * above, 1.0 - 1e-16)  # in (0, above]
    tail = np.asarray(np.frompyfunc(unit.inv_cdf, 1, 1)(quantiles), dtype=np.float64)
    draws[negative] = np.maximum(mean - std * tail, 0.0)
    return draws


_REDRAWS = 64  # rounds of redrawing negative draws: each leaves at most half of them


_SAMPLERS: dict[type, Callable[..., np.ndarray]] = {
    Uniform: lambda d, size, rng: rng.uniform(d.low, d.high, size),
    Normal: lambda d, size, rng: _truncated_normal(d.mean, d.std, size, rng),
    Exponential: lambda d, size, rng: rng.exponential(1.0 / d.rate, size),
    Empirical: lambda d, size, rng: rng.choice(d.samples, size),
    Deterministic: lambda d, size, rng: np.full(size, d.deadline),
}
