"""Fuzz every public planner entry point with hostile input, in worker subprocesses.

    python -m tests.fuzz.planner                      # 10^5 calls on 2 workers
    python -m tests.fuzz.planner --calls 20000 --workers 4 --seed 7
    python -m tests.fuzz.planner --repro 0:1234       # rerun case 1234 of seed 0, printing each call

Entry points: einet.expected_accuracy, einet.search (every method), einet.search_batch,
einet.online_step, einet.ETProfile, einet.NativePredictor (construction and predict),
einet._core.OnlineSession (construction, begin, run_branch, observe; also shared by threads), the
five distributions (construction, cdf, pickle, __setstate__, repr) and the raw einet._core
functions, fed with NaN/inf/negative/huge/subnormal numbers, wrong shapes and dtypes, empty,
0-d, non-contiguous, big-endian and read-only arrays, wrong types (None, str, bool, float, complex,
huge ints) where numbers, arrays and distributions go, huge depths, budgets, seeds and threads,
instances made by ``Cls.__new__(Cls)`` without ``__init__``, and large models.

Allowed outcomes of a call: a result (checked: E in [0, 1], shapes), ValueError or TypeError
(subclasses included). Findings: a crash of the worker (signal or abnormal exit: caught and
counted, the worker restarts after the crashing case), a call over 5 s (timed per call; a worker
silent for --hang seconds is killed and the call counted), any other exception type, a result
that breaks an invariant. Each finding prints a reproducer (``--repro SEED:CASE``). Exit status 1
when there is any finding. Warnings are counted, not findings.

A case is a short sequence of calls on one generated input (e.g. build a distribution, then call
its cdf, pickle it); it stops at the first exception. Case i of seed s is generated from
random.Random(f"{s}:{i}") alone, so any case can be replayed on its own.
"""

from __future__ import annotations

import argparse
import collections
import copy
import math
import pickle
import random
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import einet
from einet import _core
from tests.fuzz.pool import Worker, serve

SLOW_S = 5.0
ALLOWED = (ValueError, TypeError)
TOLERANCE = 1e-9


class InvariantError(Exception):
    """A call returned, but its result is impossible."""


# ---------------------------------------------------------------- hostile values

SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1e300,
                  1.7976931348623157e308, -1.7976931348623157e308, -1.0, -1e-300, 1.0, 1.0000000000000002,
                  0.9999999999999999, 0.5, 2.0, 1e6]
WRONG_SCALARS: list[Callable[[], Any]] = [
    lambda: None, lambda: "0.5", lambda: b"1", lambda: [0.5], lambda: (1,), lambda: {}, lambda: object(),
    lambda: 1j, lambda: 10**400, lambda: -(10**400), lambda: True, lambda: False, lambda: np.float32("nan"),
    lambda: np.float16(65504), lambda: np.complex128(1 + 1j), lambda: np.array([0.5]), lambda: np.array(0.5),
    lambda: np.int64(-1), lambda: np.uint64(2**64 - 1), lambda: np.bool_(True), lambda: math.nan, lambda: math.inf,
]
HOSTILE_INTS: list[Callable[[], Any]] = [
    lambda: -1, lambda: -(2**63), lambda: 2**31, lambda: 2**32, lambda: 2**63 - 1, lambda: 2**63, lambda: 2**64,
    lambda: 2**64 - 1, lambda: 10**30, lambda: True, lambda: False, lambda: 2.0, lambda: 2.5, lambda: math.nan,
    lambda: "3", lambda: None, lambda: np.int64(3), lambda: np.uint64(2**64 - 1), lambda: np.int8(-1),
    lambda: np.bool_(True), lambda: np.float64(3.0), lambda: [3], lambda: 1j, lambda: object(),
]


def any_float(r: random.Random, low: float, high: float, bad: float) -> Any:
    """A float in [low, high], or with probability `bad` a hostile float or a wrong type."""
    if r.random() < bad:
        return r.choice(SPECIAL_FLOATS) if r.random() < 0.6 else r.choice(WRONG_SCALARS)()
    return r.uniform(low, high)


def any_int(r: random.Random, low: int, high: int, bad: float) -> Any:
    if r.random() < bad:
        return r.choice(HOSTILE_INTS)()
    return r.randint(low, high)


def hostile_values(r: random.Random, values: list[float], bad: float) -> list[float]:
    """`values` with, now and then, special floats in place of some entries."""
    if r.random() >= bad:
        return values
    if r.random() < 0.1:  # every entry huge: sums of them overflow to inf
        return [1.7976931348623157e308] * len(values)
    values = list(values)
    for _ in range(r.randint(1, 3)):
        if values:
            values[r.randrange(len(values))] = r.choice(SPECIAL_FLOATS)
    return values


def _as_integers(values: list[float]) -> Any:
    with np.errstate(all="ignore"):
        return np.array(values).astype(np.int64) if all(map(math.isfinite, values)) else np.array(values)


def _read_only(values: list[float]) -> Any:
    out = np.array(values, dtype=np.float64)
    out.flags.writeable = False
    return out


# Hostile containers of a list of floats, each the same values in another shape, type or layout.
HOSTILE_CONTAINERS: list[Callable[[list[float]], Any]] = [
    tuple,
    lambda v: np.array(v, dtype=np.float32),
    lambda v: np.array(v, dtype=np.float16),
    _as_integers,
    lambda v: np.array(v).astype(bool),
    lambda v: np.array(v, dtype=np.complex128) + 1j,
    lambda v: np.array(v, dtype=object),
    lambda v: np.array([str(x) for x in v]),
    lambda v: np.array(v, dtype=">f8"),
    lambda v: np.repeat(np.array(v, dtype=np.float64), 2)[::2],  # a non-contiguous view
    _read_only,
    lambda v: np.array(v, dtype=np.float64).reshape(1, -1),
    lambda v: np.array(v, dtype=np.float64).reshape(-1, 1),
    lambda v: np.array(v[0] if v else 0.5),
    lambda v: np.array([], dtype=np.float64),
    lambda v: [*v, 0.5],
    lambda v: v[:-1],
    lambda v: np.asfortranarray(np.tile(np.array(v, dtype=np.float64), (2, 1))),
    lambda v: [None] * len(v),
    iter,
    lambda v: np.array(v, dtype=np.float64)[::-1],
    lambda v: np.array(v, dtype=np.complex128),
]


def as_container(r: random.Random, values: list[float], bad: float) -> Any:
    """`values` as an array, most often float64; with probability `bad` a hostile container."""
    if r.random() >= bad:
        return np.array(values, dtype=np.float64) if r.random() < 0.8 else list(values)
    kind = r.randrange(len(HOSTILE_CONTAINERS) + 1)
    return HOSTILE_CONTAINERS[kind](values) if kind < len(HOSTILE_CONTAINERS) else r.choice(WRONG_SCALARS)()


def as_mask(r: random.Random, bits: list[int], bad: float) -> Any:
    """A plan / observation mask: bool array most often, hostile with probability `bad`."""
    if r.random() >= bad:
        return np.array(bits, dtype=bool) if r.random() < 0.8 else np.array(bits, dtype=np.int64)
    kind = r.randrange(16)
    if kind == 0:
        return list(bits)
    if kind == 1:
        return np.array(bits, dtype=np.uint8)
    if kind == 2:
        return np.array(bits, dtype=np.float64)
    if kind == 3:
        return np.array([*bits[:-1], 2] if bits else [2], dtype=np.int64)
    if kind == 4:
        return np.array([*bits[:-1], -1] if bits else [-1], dtype=np.int8)
    if kind == 5:  # bool storage holding a byte other than 0/1
        return np.array([*bits[:-1], 2] if bits else [2], dtype=np.uint8).view(bool)
    if kind == 6:
        return np.array(bits, dtype=np.uint64) + np.uint64(2**63)
    if kind == 7:
        return np.repeat(np.array(bits, dtype=bool), 2)[::2]
    if kind == 8:
        return np.array(bits, dtype=bool).reshape(1, -1)
    if kind == 9:
        return np.array(bool(bits[0]) if bits else True)
    if kind == 10:
        return np.array([], dtype=bool)
    if kind == 11:
        return np.array([*bits, 1], dtype=bool)
    if kind == 12:
        return np.array(bits, dtype=object)
    if kind == 13:
        return np.array([str(b) for b in bits])
    if kind == 14:
        return np.array(bits, dtype=">i8")
    return r.choice(WRONG_SCALARS)()


UNINITIALISED: dict[int, Any] = {}  # id -> instance made by __new__ alone (kept alive here)


def uninitialised(cls: type) -> Any:
    """An instance made by __new__ alone: its C++ object was never constructed."""
    instance = cls.__new__(cls)
    UNINITIALISED[id(instance)] = instance
    return instance


DIST_CLASSES = (einet.Uniform, einet.Normal, einet.Exponential, einet.Empirical, einet.Deterministic)


def valid_distribution(r: random.Random, total: float) -> Any:
    total = max(total, 1e-3)
    kind = r.randrange(5)
    if kind == 0:
        low = r.uniform(-total, total)
        return einet.Uniform(low, low + r.uniform(1e-3, 2 * total))
    if kind == 1:
        return einet.Normal(r.uniform(0.0, total), r.uniform(total / 50, total))
    if kind == 2:
        return einet.Exponential(r.uniform(0.1, 10.0) / total)
    if kind == 3:
        return einet.Empirical([r.uniform(0.0, total) for _ in range(r.randint(1, 30))])
    return einet.Deterministic(r.uniform(0.0, total))


def extreme_distribution(r: random.Random) -> Any:
    """A distribution its constructor accepts, with extreme (finite) parameters."""
    big, tiny = 1.7976931348623157e308, 5e-324
    choices: list[Callable[[], Any]] = [
        lambda: einet.Uniform(-big, big), lambda: einet.Uniform(0.0, tiny), lambda: einet.Uniform(-1e308, -1e307),
        lambda: einet.Uniform(1e300, 1e301), lambda: einet.Normal(0.0, tiny), lambda: einet.Normal(big, big),
        lambda: einet.Normal(-30.0, 1.0), lambda: einet.Normal(1e300, 1e-300), lambda: einet.Exponential(tiny),
        lambda: einet.Exponential(big), lambda: einet.Empirical([big, -big, 0.0]),
        lambda: einet.Empirical(np.full(1000, 1e-300)), lambda: einet.Deterministic(0.0),
        lambda: einet.Deterministic(big), lambda: einet.Deterministic(tiny),
    ]
    return r.choice(choices)()


def any_distribution(r: random.Random, total: float, bad: float) -> Any:
    if r.random() >= bad:
        return valid_distribution(r, total)
    kind = r.randrange(10)
    if kind < 5:
        try:
            return extreme_distribution(r)
        except ValueError:  # refused by its constructor: a valid one then
            return valid_distribution(r, total)
    if kind == 5:
        return uninitialised(r.choice(DIST_CLASSES))
    if kind == 6:
        return r.choice(WRONG_SCALARS)()
    if kind == 7:
        return einet.ETProfile([1.0], [1.0])
    if kind == 8:
        return type("FakeDist", (), {"cdf": lambda self, t: 0.5})()
    return "uniform"


def any_method(r: random.Random, bad: float) -> Any:
    if r.random() < bad:
        return r.choice(["HYBRID", "", "hybrid ", "exhaustive\0", None, 3, b"hybrid", ["hybrid"], "random\n"])
    return r.choice(einet.planner.METHODS)


def any_rule(r: random.Random, bad: float) -> Any:
    if r.random() < bad:
        return r.choice(["ensemble", "LATEST", "", None, 0, b"best", "best\0", ["latest"]])
    return r.choice(einet.planner.PLANNING_RULES)


def any_depth(r: random.Random, bad: float) -> Any:
    if r.random() < bad:
        return r.choice([21, 25, 64, 2**20]) if r.random() < 0.5 else r.choice(HOSTILE_INTS)()
    return r.randint(0, 8) if r.random() < 0.95 else r.randint(9, 20)


def any_budget(r: random.Random, bad: float) -> Any:
    if r.random() < bad:
        if r.random() < 0.5:
            return r.choice([0, 10**5, 10**6, 10**7, 10**7 + 1, 2**63, 2**64 - 1])
        return r.choice(HOSTILE_INTS)()
    return r.randint(1, 2000)


@dataclass
class Instance:
    """A planning problem, valid unless `bad` > 0 made parts of it hostile."""

    n: int
    conv: list[float]
    branch: list[float]
    et: Any
    scores: list[float]
    dist: Any
    start: Any
    elapsed: Any
    held: Any
    rule: Any
    method: Any
    depth: Any
    budget: Any
    seed: Any


LARGE_MODELS = True  # tests/test_fuzz.py turns them off to stay fast


def block_count(r: random.Random) -> int:
    roll = r.random()
    if roll < 0.85 or (not LARGE_MODELS and roll < 0.95):
        return r.randint(1, 8)
    if roll < 0.985 or not LARGE_MODELS:
        return r.randint(9, 40)
    return r.randint(200, 3000)  # large models: the work caps must hold


def instance(r: random.Random, bad: float) -> Instance:
    n = block_count(r)
    conv = hostile_values(r, [r.uniform(0.0, 2.0) for _ in range(n)], bad / 2)
    branch = hostile_values(r, [r.uniform(0.0, 1.0) for _ in range(n)], bad / 2)
    if r.random() < bad / 2:
        et: Any = r.choice([None, (conv, branch), "et", conv])
    else:
        try:
            et = einet.ETProfile(conv, branch)
        except ValueError:
            conv, branch = [1.0] * n, [0.5] * n
            et = einet.ETProfile(conv, branch)
    total = min(sum(x for x in conv + branch if math.isfinite(x) and x > 0), 1e6) or 1.0
    scores = hostile_values(r, [r.random() for _ in range(n)], bad)
    return Instance(
        n=n, conv=conv, branch=branch, et=et, scores=scores, dist=any_distribution(r, total, bad),
        start=any_int(r, 0, n, bad), elapsed=any_float(r, 0.0, total, bad), held=any_float(r, 0.0, 1.0, bad),
        rule=any_rule(r, bad), method=any_method(r, bad), depth=any_depth(r, bad), budget=any_budget(r, bad),
        seed=any_int(r, 0, 2**64 - 1, bad),
    )


def small_instance(r: random.Random, bad: float, blocks: int = 40) -> Instance:
    """An instance of at most `blocks` blocks (a predictor's cost grows with the square of its exits)."""
    inst = instance(r, bad)
    if inst.n > blocks:
        inst.n, inst.conv, inst.branch = blocks, inst.conv[:blocks], inst.branch[:blocks]
        inst.et, inst.scores = einet.ETProfile([1.0] * blocks, [0.5] * blocks), inst.scores[:blocks]
    return inst


def predictor_layers(r: random.Random, n: int, bad: float) -> tuple[Any, Any]:
    """A small random MLP for n exits (weights [out, in]), hostile with probability `bad`."""
    rng = np.random.default_rng(r.getrandbits(32))
    widths = [2 * n] + [r.randint(1, 8) for _ in range(r.randint(0, 2))] + [n]
    weights: list[Any] = [rng.normal(size=(o, i)) for i, o in zip(widths, widths[1:])]
    biases: list[Any] = [rng.normal(size=o) for o in widths[1:]]
    if r.random() < bad:
        k = r.randrange(len(weights))
        kind = r.randrange(12)
        if kind == 0:
            weights[k] = np.full(weights[k].shape, r.choice([math.nan, math.inf, -math.inf]))
        elif kind == 1:
            weights[k] = weights[k] * 1e300
        elif kind == 2:
            weights[k] = weights[k].T
        elif kind == 3:
            weights[k] = weights[k].ravel()
        elif kind == 4:
            biases = biases[:-1]
        elif kind == 5:
            weights, biases = [], []
        elif kind == 6:
            weights[k] = weights[k][None]
        elif kind == 7:
            biases[k] = biases[k].reshape(1, -1)
        elif kind == 8:
            weights[k] = np.asfortranarray(weights[k]).astype(np.float32)
        elif kind == 9:
            weights[k] = weights[k].astype(object)
        elif kind == 10:
            biases[k] = np.full_like(biases[k], math.nan)
        else:
            weights = r.choice([None, "w", 3, weights[0], tuple(weights)])
    return weights, biases


def native_predictor(r: random.Random, n: int, bad: float) -> Any:
    weights, biases = predictor_layers(r, n, 0.0)
    return einet.NativePredictor(weights, biases, r.random() < 0.5)


# ---------------------------------------------------------------- checks on results

def check_unit(value: Any, what: str) -> None:
    v = float(value)
    if not (-TOLERANCE <= v <= 1.0 + TOLERANCE):
        raise InvariantError(f"{what} = {v!r} is not in [0, 1]")


def check_plan(plan: Any, remaining: int) -> None:
    mask = np.asarray(plan.mask)
    if mask.dtype != bool or mask.shape != (remaining,):
        raise InvariantError(f"plan mask has dtype {mask.dtype} and shape {mask.shape}, expected ({remaining},)")
    check_unit(plan.value, "plan value")
    if int(plan.evaluations) < 0:
        raise InvariantError(f"negative evaluations {plan.evaluations}")


def plan_is_its_value(plan: Any, inst: Instance) -> None:
    """A plan's value is E of its mask (inputs known valid when the search succeeded)."""
    value = einet.expected_accuracy(plan.mask, inst.scores, inst.et, inst.dist, start=int(inst.start),
                                    elapsed=float(inst.elapsed), held=float(inst.held), rule=str(inst.rule))
    if abs(float(value) - float(plan.value)) > 1e-9:
        raise InvariantError(f"plan value {plan.value!r} differs from its E {value!r}")


# ---------------------------------------------------------------- cases

Step = tuple[str, Callable[[], Any]]


@dataclass
class Case:
    kind: str
    steps: list[Step] = field(default_factory=list)

    def add(self, label: str, call: Callable[[], Any]) -> None:
        self.steps.append((label, call))


def short(value: Any) -> str:
    """A compact repr for reproducer lines (never touching an uninitialised instance)."""
    if id(value) in UNINITIALISED:
        return f"{type(value).__name__}.__new__({type(value).__name__})"
    if isinstance(value, np.ndarray):
        flags = "" if value.flags.c_contiguous else " non-contiguous"
        head = np.array2string(value.ravel()[:6], threshold=6, precision=4) if value.dtype != object else "objects"
        return f"array(shape={value.shape}, dtype={value.dtype}{flags}, head={head})"
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"{type(value).__name__}(len={len(value)}, head={value[:4]!r})"
    if isinstance(value, Instance):
        return (f"Instance(n={value.n}, start={short(value.start)}, elapsed={short(value.elapsed)}, "
                f"held={short(value.held)}, rule={value.rule!r}, method={value.method!r}, depth={short(value.depth)}, "
                f"budget={short(value.budget)}, dist={short(value.dist)}, et={short(value.et)})")
    try:
        text = repr(value)
    except Exception as error:  # an uninitialised instance's repr may itself fail
        text = f"<{type(value).__name__}: repr raised {type(error).__name__}>"
    return text if len(text) <= 160 else text[:157] + "..."


def case_distribution(r: random.Random, c: Case) -> None:
    cls = r.choice(DIST_CLASSES)
    bad = 0.3
    if cls is einet.Empirical:
        args: tuple[Any, ...] = (as_container(r, hostile_values(r, [r.uniform(0, 10) for _ in range(r.randint(0, 20))],
                                                              bad), bad),)
    elif cls in (einet.Uniform, einet.Normal):
        args = (any_float(r, -5.0, 5.0, bad), any_float(r, 0.0, 10.0, bad))
    else:
        args = (any_float(r, 0.0, 10.0, bad),)
    state: dict[str, Any] = {}
    if r.random() < 0.1:
        c.add(f"{cls.__name__}.__new__({cls.__name__})", lambda: state.__setitem__("d", uninitialised(cls)))
    elif r.random() < 0.1:
        c.add("extreme distribution", lambda: state.__setitem__("d", extreme_distribution(r)))
    else:
        c.add(f"{cls.__name__}{tuple(short(a) for a in args)}", lambda: state.__setitem__("d", cls(*args)))
    t_scalar = any_float(r, -1.0, 12.0, 0.4)
    t_array = as_container(r, hostile_values(r, [r.uniform(-1, 12) for _ in range(r.randint(0, 8))], 0.4), 0.4)

    def cdf_scalar() -> Any:
        out = state["d"].cdf(t_scalar)
        if not (isinstance(t_scalar, float) and math.isnan(t_scalar)) and not math.isnan(float(out)):
            check_unit(out, "cdf")
        return out

    def cdf_array() -> Any:
        out = np.asarray(state["d"].cdf(t_array), dtype=np.float64)
        finite = out[~np.isnan(out)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise InvariantError(f"cdf values outside [0, 1]: {finite.min()} .. {finite.max()}")
        return out

    c.add(f"cdf({short(t_scalar)})", cdf_scalar)
    c.add(f"cdf({short(t_array)})", cdf_array)
    c.add("repr", lambda: repr(state["d"]))
    c.add("pickle round trip", lambda: pickle.loads(pickle.dumps(state["d"])))
    c.add("copy.deepcopy", lambda: copy.deepcopy(state["d"]))
    attributes = {einet.Uniform: "low", einet.Normal: "std", einet.Exponential: "rate", einet.Empirical: "samples",
                  einet.Deterministic: "deadline"}
    c.add("its parameter attribute", lambda: getattr(state["d"], attributes[type(state["d"])]))
    size = r.choice([0, 1, 2, 3])
    bad_state = r.choice([
        lambda: tuple(any_float(r, 0, 5, 0.7) for _ in range(size)), lambda: None, lambda: "state",
        lambda: (np.array([1.0, 2.0]),), lambda: ([r.choice(SPECIAL_FLOATS)],), lambda: (1.0, 2.0, 3.0),
    ])()
    c.add(f"__new__ + __setstate__({short(bad_state)})", lambda: uninitialised(cls).__setstate__(bad_state))


def wrapped_search_kwargs(inst: Instance) -> dict[str, Any]:
    return {"method": inst.method, "depth": inst.depth, "start": inst.start, "elapsed": inst.elapsed,
            "held": inst.held, "rule": inst.rule, "budget": inst.budget, "seed": inst.seed}


def case_search(r: random.Random, c: Case, bad: float) -> None:
    inst = instance(r, bad)
    scores = as_container(r, inst.scores, bad)

    def call() -> Any:
        plan = einet.search(scores, inst.et, inst.dist, **wrapped_search_kwargs(inst))
        check_plan(plan, inst.n - int(inst.start))
        if bad == 0.0:
            plan_is_its_value(plan, inst)
        return plan

    c.add(f"search(scores={short(scores)}, {short(inst)})", call)


def case_expected_accuracy(r: random.Random, c: Case, bad: float) -> None:
    inst = instance(r, bad)
    remaining = inst.n - (inst.start if isinstance(inst.start, int) and 0 <= inst.start <= inst.n else 0)
    if r.random() < 0.3:
        rows = r.randint(0, 5)
        mask: Any = as_mask(r, [r.randint(0, 1) for _ in range(rows * remaining)], bad)
        if isinstance(mask, np.ndarray) and mask.size == rows * remaining and mask.ndim == 1:
            mask = mask.reshape(rows, remaining)
    else:
        mask = as_mask(r, [r.randint(0, 1) for _ in range(remaining)], bad)
    scores = as_container(r, inst.scores, bad)

    def call() -> Any:
        value = einet.expected_accuracy(mask, scores, inst.et, inst.dist, start=inst.start, elapsed=inst.elapsed,
                                        held=inst.held, rule=inst.rule)
        for v in np.atleast_1d(value):
            check_unit(v, "E")
        return value

    c.add(f"expected_accuracy(mask={short(mask)}, scores={short(scores)}, {short(inst)})", call)


def case_search_batch(r: random.Random, c: Case, bad: float) -> None:
    inst = instance(r, bad)
    rows = r.choice([0, 1, 2, 3, 5, 8])
    matrix = [hostile_values(r, [r.random() for _ in range(inst.n)], bad) for _ in range(rows)]
    scores: Any = np.array(matrix, dtype=np.float64).reshape(rows, inst.n)
    if r.random() < bad:
        scores = r.choice([scores.T, scores.ravel(), scores[None], scores.astype(np.float32),
                           np.asfortranarray(scores), scores[:, ::-1], matrix, scores.astype(object)])
    elapsed = inst.elapsed if r.random() < 0.5 else as_container(r, [r.uniform(0, 3) for _ in range(rows)], bad)
    held = inst.held if r.random() < 0.5 else as_container(r, [r.random() for _ in range(rows)], bad)
    threads = None if r.random() < 0.4 else any_int(r, 0, 4, bad if r.random() < 0.5 else 0.5)
    kwargs = wrapped_search_kwargs(inst)
    kwargs.update(elapsed=elapsed, held=held)

    def call() -> Any:
        out = einet.search_batch(scores, inst.et, inst.dist, threads=threads, **kwargs)
        remaining = inst.n - int(inst.start)
        if out.masks.shape != (np.shape(scores)[0], remaining) or out.values.shape != (np.shape(scores)[0],):
            raise InvariantError(f"batch shapes {out.masks.shape} / {out.values.shape} for scores {np.shape(scores)}")
        for v in out.values:
            check_unit(v, "batch value")
        return out

    c.add(f"search_batch(scores={short(scores)}, elapsed={short(elapsed)}, held={short(held)}, "
          f"threads={short(threads)}, {short(inst)})", call)


def case_online_step(r: random.Random, c: Case, bad: float) -> None:
    inst = small_instance(r, bad)
    n = inst.n
    state: dict[str, Any] = {}
    weights, biases = predictor_layers(r, n if r.random() >= bad else r.randint(0, n + 1), bad)
    calibrated = r.random() < 0.5 if r.random() >= bad else r.choice(WRONG_SCALARS)()
    seen = [r.randint(0, 1) for _ in range(n)]
    observed = as_container(r, hostile_values(r, [r.random() if s else 0.0 for s in seen], bad), bad)
    mask = as_mask(r, seen, bad)
    held_exit: Any = r.choice([-1] + [i for i in range(n) if seen[i]]) if r.random() >= bad else \
        r.choice([*HOSTILE_INTS, lambda: n, lambda: -2])()
    c.add(f"NativePredictor(weights={short(weights)}, biases={short(biases)}, calibrated={short(calibrated)})",
          lambda: state.__setitem__("p", einet.NativePredictor(weights, biases, calibrated)))

    def predict() -> Any:
        out = state["p"].predict(observed, mask)
        if out.shape != (state["p"].num_exits,):
            raise InvariantError(f"predict returned shape {out.shape} for {state['p'].num_exits} exits")
        return out

    c.add(f"predict(observed={short(observed)}, mask={short(mask)})", predict)

    def step() -> Any:
        out = einet.online_step(state["p"], observed, mask, inst.et, inst.dist, inst.start, inst.elapsed,
                                held_exit=held_exit, held=inst.held, rule=inst.rule, method=inst.method,
                                depth=inst.depth, budget=inst.budget, seed=inst.seed)
        check_plan(out.plan, n - int(inst.start))
        check_unit(out.held, "held")
        if out.scores.shape != (n,):
            raise InvariantError(f"online_step scores have shape {out.scores.shape}")
        return out

    c.add(f"online_step(observed={short(observed)}, mask={short(mask)}, held_exit={short(held_exit)}, "
          f"{short(inst)})", step)


def case_session(r: random.Random, c: Case, bad: float) -> None:
    state: dict[str, Any] = {}  # the session, once made
    inst = small_instance(r, bad)
    n = inst.n
    conv = as_container(r, inst.et.conv.tolist() if isinstance(inst.et, einet.ETProfile) else inst.conv, bad)
    branch = as_container(r, inst.et.branch.tolist() if isinstance(inst.et, einet.ETProfile) else inst.branch, bad)
    first = as_mask(r, [r.randint(0, 1) for _ in range(n)], bad)
    margin = any_float(r, 0.0, 0.05, bad) if r.random() < 0.5 else 0.0
    if r.random() < bad / 3:
        c.add("OnlineSession.__new__(OnlineSession)",
              lambda: state.__setitem__("s", uninitialised(_core.OnlineSession)))
    else:
        predictor = uninitialised(einet.NativePredictor) if r.random() < bad / 5 else native_predictor(r, n, 0.0)
        c.add(f"OnlineSession(predictor, conv={short(conv)}, branch={short(branch)}, {short(inst)}, "
              f"first_plan={short(first)}, margin={short(margin)})",
              lambda: state.__setitem__("s", _core.OnlineSession(
                  predictor, conv, branch, inst.dist, inst.rule,
                  _core.SearchOptions(inst.method, inst.depth, inst.budget, inst.seed), first, margin)))
    c.add("begin()", lambda: state["s"].begin())
    elapsed = 0.0
    for _ in range(r.randint(1, 6)):
        block = any_int(r, 0, n - 1, bad)
        confidence = any_float(r, 0.0, 1.0, bad)
        elapsed += r.uniform(0.0, 2.0)
        t = any_float(r, elapsed, elapsed, bad)
        c.add(f"run_branch({short(block)})", lambda b=block: state["s"].run_branch(b))
        c.add(f"observe({short(block)}, {short(confidence)}, {short(t)})",
              lambda b=block, x=confidence, e=t: state["s"].observe(b, x, e))
    if r.random() < 0.02:  # one session shared by threads: the native object must stay consistent
        def shared() -> None:
            session, stop = state["s"], time.perf_counter() + 0.05
            errors: list[BaseException] = []

            def loop(i: int) -> None:
                try:
                    while time.perf_counter() < stop:
                        if i == 2:
                            session.begin()
                        else:
                            session.observe((i * 7) % n, 0.5, 1.0)
                            session.run_branch(n - 1)
                except BaseException as error:  # collected and re-raised below
                    errors.append(error)

            threads = [threading.Thread(target=loop, args=(i,)) for i in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise errors[0]

        c.add("session shared by 3 threads for 50 ms", shared)


def case_et_profile(r: random.Random, c: Case) -> None:
    n = r.randint(0, 6)
    conv = as_container(r, hostile_values(r, [r.uniform(0, 2) for _ in range(n)], 0.4), 0.5)
    branch = as_container(r, hostile_values(r, [r.uniform(0, 2) for _ in range(n)], 0.4), 0.5)
    state: dict[str, Any] = {}

    def build() -> Any:
        state["et"] = einet.ETProfile(conv, branch)
        if state["et"].conv.dtype != np.float64 or state["et"].conv.ndim != 1:
            raise InvariantError(f"ETProfile kept dtype {state['et'].conv.dtype}, ndim {state['et'].conv.ndim}")
        return state["et"]

    c.add(f"ETProfile({short(conv)}, {short(branch)})", build)
    c.add("total()", lambda: state["et"].total())
    c.add("repr/eq", lambda: (repr(state["et"]), state["et"] == state["et"]))


OPTIONS = object()  # where case_raw_core's calls take their SearchOptions


def case_raw_core(r: random.Random, c: Case, bad: float) -> None:
    """The native functions called directly: no Python-side checks in front."""
    inst = instance(r, bad)
    n = inst.n
    conv = as_container(r, inst.conv, bad)
    branch = as_container(r, inst.branch, bad)
    scores = as_container(r, inst.scores, bad)
    which = r.randrange(4 if n <= 40 else 3)  # (a predictor for thousands of exits is too big to build)
    args: list[Any]
    if which == 0:
        fn = _core.search
        args = [scores, conv, branch, inst.dist, OPTIONS, inst.start, inst.elapsed, inst.held, inst.rule]
    elif which == 1:
        fn = _core.expected_accuracy
        args = [as_mask(r, [r.randint(0, 1) for _ in range(n)], bad), scores, conv, branch, inst.dist, inst.start,
                inst.elapsed, inst.held, inst.rule]
    elif which == 2:
        fn = _core.search_batch
        rows = r.randint(0, 3)
        args = [np.tile(np.asarray(inst.scores), (rows, 1)) if r.random() >= bad else scores, conv, branch,
                inst.dist, OPTIONS, inst.start, as_container(r, [r.uniform(0, 2) for _ in range(rows)], bad),
                as_container(r, [r.random() for _ in range(rows)], bad), inst.rule, any_int(r, 0, 4, bad)]
    else:
        fn = _core.online_step
        seen = [r.randint(0, 1) for _ in range(n)]
        args = [native_predictor(r, n, 0.0), scores, as_mask(r, seen, bad), conv, branch, inst.dist, OPTIONS,
                inst.start, inst.elapsed, any_int(r, -1, n - 1, bad), inst.held, inst.rule]
    if r.random() < 0.1:  # wrong argument count
        args = args[:-1] if r.random() < 0.5 else [*args, 0]
    options = (inst.method, inst.depth, inst.budget, inst.seed)  # built in the call: its errors count there
    c.add(f"_core.{fn.__name__}({', '.join(short(options) if a is OPTIONS else short(a) for a in args)})",
          lambda: fn(*(_core.SearchOptions(*options) if a is OPTIONS else a for a in args)))


KINDS: dict[str, tuple[float, Callable[[random.Random, Case, float], None]]] = {  # kind: (share, builder)
    "search": (0.22, case_search),
    "expected_accuracy": (0.12, case_expected_accuracy),
    "search_batch": (0.10, case_search_batch),
    "online_step": (0.12, case_online_step),
    "session": (0.10, case_session),
    "distribution": (0.14, lambda r, c, bad: case_distribution(r, c)),
    "et_profile": (0.06, lambda r, c, bad: case_et_profile(r, c)),
    "raw_core": (0.14, lambda r, c, bad: case_raw_core(r, c, max(bad, 0.05))),
}


def build_case(r: random.Random, kind: str | None = None) -> Case:
    """A case of `kind` (drawn by share if None) from the random source `r` alone."""
    roll = r.random()
    bad = 0.0 if r.random() < 0.3 else r.choice([0.05, 0.15, 0.4])
    if kind is None:
        for kind, (share, _) in KINDS.items():  # noqa: B007 - the kind drawn is the one used below
            roll -= share
            if roll < 0.0:
                break
    case = Case(kind)
    with np.errstate(all="ignore"):
        KINDS[kind][1](r, case, bad)
    return case


def make_case(seed: int, index: int) -> Case:
    try:
        return build_case(random.Random(f"{seed}:{index}"))
    except Exception as error:  # generation itself must never fail: a bug of this script
        raise RuntimeError(f"case {seed}:{index} could not be generated") from error


# ---------------------------------------------------------------- running

def outcome_of(call: Callable[[], Any]) -> tuple[str, str, list[str]]:
    """('ok' | allowed exception name | 'BAD:<type>' | 'INVARIANT', detail, warning categories)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
            status, detail = "ok", ""
        except InvariantError as error:
            status, detail = "INVARIANT", str(error)
        except ALLOWED as error:  # named by the built-in kind it is (einet's own refusals derive from them)
            status, detail = next(kind.__name__ for kind in ALLOWED if isinstance(error, kind)), ""
        except Exception as error:
            status, detail = f"BAD:{type(error).__name__}", f"{error}"[:300]
    return status, detail, sorted({w.category.__name__ for w in caught})


def worker(seed: int, start: int, stop: int) -> None:
    """Runs cases start..stop-1; one line before ('B') and after ('E') each call on stdout."""
    out = sys.stdout
    for index in range(start, stop):
        case = make_case(seed, index)
        for number, (_, call) in enumerate(case.steps):
            out.write(f"B {index} {number}\n")
            out.flush()
            wall, cpu = time.perf_counter(), time.process_time()
            status, detail, caught = outcome_of(call)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            detail = detail.replace("\n", " ")
            out.write(f"E {index} {number} {case.kind} {status} {wall:.6f} {cpu:.6f} {','.join(caught) or '-'} "
                      f"{detail}\n")
            if status != "ok":
                break
        out.write(f"D {index}\n")
    out.flush()


@dataclass
class Tally:
    calls: int = 0
    cases: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    warnings: collections.Counter[str] = field(default_factory=collections.Counter)
    first_warning: dict[str, tuple[int, int]] = field(default_factory=dict)  # category -> (case, call)
    findings: list[tuple[str, int, int, str]] = field(default_factory=list)  # (what, case, call, detail)
    slow: int = 0
    crashes: int = 0
    hangs: int = 0


def label_of(seed: int, index: int, number: int) -> str:
    try:
        steps = make_case(seed, index).steps
    except Exception as error:
        return f"(case not generated: {error.__cause__!r})"
    return steps[number][0] if number < len(steps) else "?"


def run(calls: int, workers: int, seed: int, chunk: int, hang: float) -> Tally:
    tally = Tally()
    pending: collections.deque[tuple[int, int]] = collections.deque()  # case ranges still to run
    next_case = 0

    def start() -> Worker:
        nonlocal next_case
        if pending:
            first, stop = pending.popleft()
        else:
            first, stop = next_case, next_case + chunk
            next_case += chunk
        return Worker([sys.executable, "-X", "faulthandler", "-m", __spec__.name, "--worker", f"{seed}:{first}:{stop}"],
                      first, stop)

    def retire(w: Worker, stderr: str, hung: bool) -> None:
        if w.current is not None:  # died (or was killed) inside a call
            index, number = w.current  # type: ignore[misc]
            tally.calls += 1
            if hung:
                tally.hangs += 1
                tally.slow += 1
                tally.findings.append(("hang", index, number, f"killed after {hang:.0f} s inside the call"))
            else:
                tally.crashes += 1
                lines = stderr.strip().splitlines()
                tail = " | ".join([*lines[:1], *[line.strip() for line in lines if "File" in line][:1]])
                tally.findings.append(("crash", index, number, f"exit status {w.process.returncode}; stderr: {tail}"))
            tally.cases += 1
            resume = index + 1
        else:
            resume = w.done_through + 1
            if resume < w.stop:
                tally.crashes += 1
                tally.findings.append(("crash", resume, 0, f"worker exited with {w.process.returncode} between "
                                       f"calls: {stderr.strip()[-300:]}"))
                resume += 1
        if resume < w.stop:
            pending.appendleft((resume, w.stop))

    def handle(w: Worker, line: str) -> None:
        parts = line.split(" ", 8)
        if parts[0] == "B":
            w.current = (int(parts[1]), int(parts[2]))
        elif parts[0] == "E":
            index, number, kind, status = int(parts[1]), int(parts[2]), parts[3], parts[4]
            wall, cpu, caught = float(parts[5]), float(parts[6]), parts[7]
            detail = parts[8] if len(parts) > 8 else ""
            w.current = None
            tally.calls += 1
            tally.outcomes[f"{kind}: {'other exception' if status.startswith('BAD:') else status}"] += 1
            tally.outcomes[status] += 1
            if caught != "-":
                for category in caught.split(","):
                    tally.warnings[category] += 1
                    tally.first_warning.setdefault(category, (index, number))
            if wall > SLOW_S:
                tally.slow += 1
                tally.findings.append(("slow", index, number, f"{wall:.1f} s wall, {cpu:.1f} s CPU"))
            if status.startswith("BAD:"):
                tally.findings.append((status[4:], index, number, detail))
            elif status == "INVARIANT":
                tally.findings.append(("invariant", index, number, detail))
        elif parts[0] == "D":
            w.done_through = int(parts[1])
            tally.cases += 1

    serve(workers, start, lambda _: tally.calls < calls, handle, retire, hang, 4 * hang)
    return tally


def report(tally: Tally, seed: int, seconds: float, workers: int) -> int:
    allowed = sum(tally.outcomes[e.__name__] for e in ALLOWED)
    other = sum(v for k, v in tally.outcomes.items() if k.startswith("BAD:"))
    print(f"calls: {tally.calls} in {tally.cases} cases, {workers} worker processes, {seconds:.0f} s, seed {seed}")
    print(f"  results: {tally.outcomes['ok']}, allowed exceptions: {allowed} "
          f"({', '.join(f'{e.__name__} {tally.outcomes[e.__name__]}' for e in ALLOWED)})")
    print(f"crashes: {tally.crashes}")
    print(f"calls over {SLOW_S:.0f} s: {tally.slow} (of which killed as hung: {tally.hangs})")
    print(f"exceptions outside {'/'.join(e.__name__ for e in ALLOWED)}: {other}")
    print(f"invariant violations (impossible results): {tally.outcomes['INVARIANT']}")
    print("warnings (not findings): " + (", ".join(f"{k} {v}" for k, v in tally.warnings.most_common()) or "none"))
    for category, (index, number) in sorted(tally.first_warning.items()):
        print(f"  first {category}: --repro {seed}:{index} (call {number}: {label_of(seed, index, number)[:200]})")
    print("calls per entry point and outcome:")
    for key, value in sorted(tally.outcomes.items()):
        if ": " in key:
            print(f"  {key}: {value}")
    if tally.findings:
        print("findings (first 3 of each kind), reproduce with: python -m tests.fuzz.planner --repro SEED:CASE")
        shown: collections.Counter[str] = collections.Counter()
        for what, index, number, detail in tally.findings:
            shown[what] += 1
            if shown[what] <= 3:
                print(f"  [{what}] --repro {seed}:{index} (call {number}: {label_of(seed, index, number)[:300]})")
                if detail:
                    print(f"      {detail[:300]}")
        print("finding counts: " + ", ".join(f"{k} {v}" for k, v in shown.most_common()))
    return 1 if tally.findings else 0


def repro(spec: str) -> None:
    seed, index = (int(x) for x in spec.split(":"))
    case = make_case(seed, index)
    print(f"case {seed}:{index} ({case.kind})", flush=True)
    for number, (label, call) in enumerate(case.steps):
        print(f"  call {number}: {label}", flush=True)
        wall = time.perf_counter()
        try:
            result = call()
            print(f"    -> {short(result)} ({time.perf_counter() - wall:.3f} s)", flush=True)
        except Exception as error:
            print(f"    -> {type(error).__name__}: {str(error)[:300]} ({time.perf_counter() - wall:.3f} s)", flush=True)
            if not isinstance(error, ALLOWED):
                traceback.print_exc()
            break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="calls to make in all (default 10^5)")
    parser.add_argument("--workers", type=int, default=2, help="worker subprocesses at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=3000, help="cases per worker process")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds of silence before a worker is killed")
    parser.add_argument("--repro", metavar="SEED:CASE", help="rerun one case in this process, printing each call")
    parser.add_argument("--worker", metavar="SEED:START:STOP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*(int(x) for x in args.worker.split(":")))
        return 0
    if args.repro:
        repro(args.repro)
        return 0
    began = time.monotonic()
    tally = run(args.calls, args.workers, args.seed, args.chunk, args.hang)
    return report(tally, args.seed, time.monotonic() - began, args.workers)


if __name__ == "__main__":
    sys.exit(main())
