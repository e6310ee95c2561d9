"""The planner's Python API: thin, checked wrappers over the native core ``einet._core``.

Everything here works with numpy alone (no torch). Times are in seconds, scores
are probabilities in [0, 1], and a plan (``mask``) has one boolean per remaining
block ``start..N-1``: True where that block's exit branch runs.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._core import Deterministic, Empirical, Exponential, Normal, SearchOptions, Uniform
from ._core import Predictor as NativePredictor
from .errors import EinetTypeError, EinetValueError

__all__ = [
    "METHODS", "PLANNING_RULES", "ArrayLike", "BatchPlans", "Deterministic", "Distribution", "ETProfile", "Empirical",
    "Exponential", "NativePredictor", "Normal", "OnlineStep", "Plan", "Uniform", "expected_accuracy", "online_step",
    "search", "search_batch",
]

Distribution = Union[Uniform, Normal, Exponential, Empirical, Deterministic]
ArrayLike = npt.ArrayLike

# The rules the native objective plans for (the held answer: the latest exit run, or the best so far); the
# output rules a runtime answers with are einet.rules.RULES (ensemble included, planned as latest)
PLANNING_RULES = ("latest", "best")
METHODS = ("exhaustive", "greedy", "hybrid", "random")


def _real_array(values: ArrayLike, name: str, copy: bool = False) -> npt.NDArray[np.float64]:
    """`values` as float64 (a new array if `copy`): TypeError for complex numbers (never silently
    made real), ValueError for an int too large for a float (where numpy raises OverflowError)."""
    try:
        array = np.asarray(values)
        if array.dtype.kind == "c":
            raise EinetTypeError(f"{name} must be real numbers, got dtype {array.dtype}")
        return np.array(array, dtype=np.float64) if copy else np.asarray(array, dtype=np.float64)
    except OverflowError:
        raise EinetValueError(f"{name} holds a number too large for a float") from None


def _times(values: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    times = _real_array(values, f"{name} times", copy=True)
    if times.ndim != 1:
        raise EinetValueError(f"{name} times must be 1-D, got shape {times.shape}")
    bad = ~np.isfinite(times) | (times < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise EinetValueError(f"{name} time[{i}] must be finite and >= 0, got {times[i]}")
    times.flags.writeable = False
    return times


class ETProfile:
    """Per-block execution times of a multi-exit model: conv part and exit branch, in seconds.

    Block i runs its conv part (``conv[i]``) and then, if the plan says so, its
    branch (``branch[i]``). The arrays are read-only so a profile can be shared.
    """

    def __init__(self, conv: ArrayLike, branch: ArrayLike) -> None:
        self.conv = _times(conv, "conv")
        self.branch = _times(branch, "branch")
        if self.conv.size == 0:
            raise EinetValueError("an ETProfile needs at least one block, got none")
        if self.conv.shape != self.branch.shape:
            raise EinetValueError(f"conv and branch differ in length: {self.conv.size} vs {self.branch.size}")

    @property
    def num_blocks(self) -> int:
        return int(self.conv.size)

    def total(self) -> float:
        """Time of the full inference with every branch run: the natural scale for exit times."""
        return float(self.conv.sum() + self.branch.sum())

    def __repr__(self) -> str:
        return f"ETProfile(conv={self.conv.tolist()}, branch={self.branch.tolist()})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ETProfile):
            return NotImplemented
        return bool(np.array_equal(self.conv, other.conv) and np.array_equal(self.branch, other.branch))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Plan:
    """A search result: which branches to run, its accuracy expectation, plans evaluated."""

    mask: npt.NDArray[np.bool_]
    value: float
    evaluations: int


@dataclass(frozen=True)
class BatchPlans:
    """Search results for many samples: ``masks[b]`` is sample b's plan."""

    masks: npt.NDArray[np.bool_]
    values: npt.NDArray[np.float64]
    evaluations: npt.NDArray[np.uint64]


def _count(value: int, name: str) -> int:
    """A non-negative integer argument; ValueError (not a C++ overflow) for anything else."""
    try:
        number = operator.index(value)
    except TypeError:
        raise EinetValueError(f"{name} must be an integer, got {value!r}") from None
    if number < 0:
        raise EinetValueError(f"{name} must be >= 0, got {number}")
    return number


def search_options(method: str = "hybrid", depth: int = 4, budget: int = 1000, seed: int = 0) -> SearchOptions:
    """How to search, as the native module takes it: every count checked here (ValueError naming it),
    the method name and the work caps by the native side (see :func:`search`)."""
    if not isinstance(method, str):
        raise EinetTypeError(f"method must be a string, got {method!r}")
    return SearchOptions(method, _count(depth, "depth"), _count(budget, "budget"), _count(seed, "seed"))


def _check_et(et: ETProfile) -> None:
    if not isinstance(et, ETProfile):
        raise EinetTypeError(f"et must be an einet.ETProfile, got {type(et).__name__}")


def expected_accuracy(
    mask: ArrayLike,
    scores: ArrayLike,
    et: ETProfile,
    dist: Distribution,
    start: int = 0,
    elapsed: float = 0.0,
    held: float = 0.0,
    rule: str = "latest",
) -> float | npt.NDArray[np.float64]:
    """E(x): the probability that the answer held at the forced exit is right (docs/design.md section 2, the objective).

    ``mask`` is one plan (1-D, length N - start) or many plans (2-D, one per row);
    ``scores`` has one entry per block. Many plans are evaluated in one native call.
    """
    _check_et(et)
    return _core.expected_accuracy(
        np.asarray(mask), scores, et.conv, et.branch, dist, _count(start, "start"), elapsed, held, rule
    )


def search(
    scores: ArrayLike,
    et: ETProfile,
    dist: Distribution,
    method: str = "hybrid",
    depth: int = 4,
    start: int = 0,
    elapsed: float = 0.0,
    held: float = 0.0,
    rule: str = "latest",
    budget: int = 1000,
    seed: int = 0,
) -> Plan:
    """The plan of blocks ``start..N-1`` that maximises E, found by ``method``.

    Methods: ``exhaustive`` (every plan, at most 25 blocks), ``greedy``,
    ``hybrid`` (all 2^depth settings of the next ``depth`` branches, each
    completed greedily; the paper's method) and ``random`` (best of ``budget``
    random plans from ``seed``).

    The work is capped up front (ValueError beyond): ``depth <= 20`` and
    ``2^min(depth, N - start) * (N - start) <= 2^25`` for hybrid, ``budget <= 10^7``
    for random, at most 25 blocks for exhaustive, and for every search a worst-case
    count of block steps, each weighted by its CDF's cost (Uniform and Deterministic 1,
    Exponential 2, Normal 4, Empirical 2 + log2(samples)/4), of at most ``2^27``:
    under a second. With a Uniform exit time that is greedy over at most 926 blocks,
    hybrid at depth 4 over at most 358, random with ``budget * (N - start) <= 2^27``
    (``_core.MAX_*``). The GIL is released; Ctrl-C still interrupts the search
    within about 0.1 s (KeyboardInterrupt).
    """
    _check_et(et)
    mask, value, evaluations = _core.search(
        scores, et.conv, et.branch, dist, search_options(method, depth, budget, seed), _count(start, "start"), elapsed,
        held, rule,
    )
    return Plan(mask, value, evaluations)


def search_batch(scores: ArrayLike, et: ETProfile, dist: Distribution, method: str = "hybrid", depth: int = 4,
                 start: int = 0, elapsed: ArrayLike = 0.0, held: ArrayLike = 0.0, rule: str = "latest",
                 budget: int = 1000, seed: int = 0, threads: int | None = None) -> BatchPlans:
    """``search`` for every row of ``scores`` [B, N] in one native call, on ``threads`` cores (default: all).

    ``elapsed`` and ``held`` are scalars or one value per sample. ``threads`` is
    at most 256 (ValueError beyond); where the system refuses a thread, the batch
    runs on those it has. The GIL is released, so other Python threads keep
    running meanwhile, and Ctrl-C interrupts the batch as it does ``search``.
    """
    _check_et(et)
    scores = _real_array(scores, "batch scores")
    if scores.ndim != 2:
        raise EinetValueError(f"batch scores must be 2-D [samples, blocks], got shape {scores.shape}")
    per_sample = (scores.shape[0],)
    elapsed_array, held_array = _real_array(elapsed, "elapsed"), _real_array(held, "held")
    try:
        elapsed = np.ascontiguousarray(np.broadcast_to(elapsed_array, per_sample))
        held = np.ascontiguousarray(np.broadcast_to(held_array, per_sample))
    except ValueError:
        raise EinetValueError(
                 f"elapsed and held must be scalars or have one entry per sample ({per_sample[0]}), "
                 f"got shapes {np.shape(elapsed)} and {np.shape(held)}"
             ) from None
    masks, values, evaluations = _core.search_batch(
        scores, et.conv, et.branch, dist, search_options(method, depth, budget, seed), _count(start, "start"), elapsed,
        held, rule, 0 if threads is None else _count(threads, "threads"),
    )
    return BatchPlans(masks, values, evaluations)


@dataclass(frozen=True)
class OnlineStep:
    """One online step's result: the plan of the remaining blocks, every exit's score, the held score."""

    plan: Plan
    scores: npt.NDArray[np.float64]
    held: float


def online_step(
    predictor: NativePredictor,
    observed: ArrayLike,
    observed_mask: ArrayLike,
    et: ETProfile,
    dist: Distribution,
    start: int,
    elapsed: float,
    held_exit: int = -1,
    held: float = 0.0,
    rule: str = "latest",
    method: str = "hybrid",
    depth: int = 4,
    budget: int = 1000,
    seed: int = 0,
) -> OnlineStep:
    """Predict unobserved exit scores natively, then plan blocks ``start..N-1``: one native call.

    ``observed`` holds the confidences seen so far (read only where ``observed_mask``
    is set); ``held_exit`` is the exit whose answer is held: an int, -1 (none,
    credited ``held``) or an observed exit in [0, N). Anything else is refused by
    the native module, never truncated: TypeError for a non-integer (a float, a
    string, a bool), ValueError for an int out of range.
    """
    _check_et(et)
    mask, value, evaluations, scores, held_score = _core.online_step(
        predictor, observed, np.asarray(observed_mask), et.conv, et.branch, dist,
        search_options(method, depth, budget, seed), _count(start, "start"), elapsed, held_exit, held, rule,
    )
    return OnlineStep(Plan(mask, value, evaluations), scores, held_score)
