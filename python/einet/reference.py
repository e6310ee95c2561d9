"""The pure-Python planner: the correctness oracle for the native core and the speed baseline.

Written the way a careful researcher would write it in plain Python: a loop over
blocks per evaluation and every search calling :func:`expected_accuracy` on
whole plans, no incremental tricks. It takes the same arguments and returns the
same types as :mod:`einet.planner`, and follows the same tie rules (values
within ``TIE_TOLERANCE`` are equal; then fewer branches, then the
lexicographically smaller mask). It does not validate its input.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from ._core import Deterministic, Empirical, Exponential, Normal, Uniform
from .errors import EinetTypeError, EinetValueError
from .planner import ArrayLike, BatchPlans, Distribution, ETProfile, Plan

TIE_TOLERANCE = 1e-12
_MASK64 = (1 << 64) - 1


def _upper_tail(z: float) -> float:
    """Q(z) = P(Z > z) of the standard normal: full relative precision where it is tiny."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def cdf(dist: Distribution, t: float) -> float:
    """F(t) of an exit-time distribution, from its parameters alone (docs/design.md section 3, distributions).

    As the native ``cdf``: NaN in gives NaN out for every distribution; F(-inf) = 0, F(inf) = 1.
    """
    if math.isnan(t):
        return math.nan
    if isinstance(dist, Uniform):
        if t <= dist.low:
            return 0.0
        if t >= dist.high:
            return 1.0
        return (t - dist.low) / (dist.high - dist.low)
    if isinstance(dist, Normal):
        if t <= 0.0:
            return 0.0
        # P(0 < X <= t) / P(X >= 0), differencing the small tails: Phi(z) - Phi(z0) below the
        # mean, Q(z0) - Q(z) above it (Phi(x) = Q(-x)), so that neither loses precision.
        z0 = -dist.mean / dist.std
        z = (t - dist.mean) / dist.std
        above_zero = _upper_tail(z0)
        inside = _upper_tail(-z) - _upper_tail(-z0) if z <= 0.0 else above_zero - _upper_tail(z)
        return inside / above_zero
    if isinstance(dist, Exponential):
        return -math.expm1(-dist.rate * t) if t > 0.0 else 0.0
    if isinstance(dist, Empirical):
        samples = dist.samples  # sorted
        return bisect.bisect_right(samples, t) / len(samples)
    if isinstance(dist, Deterministic):
        return 1.0 if t >= dist.deadline else 0.0
    raise EinetTypeError(f"unknown distribution {dist!r}")


def _evaluate(mask: Sequence[int], scores: Sequence[float], et: ETProfile, dist: Distribution,
              start: int, elapsed: float, held: float, rule: str) -> float:
    t = elapsed
    before = cdf(dist, t)
    value = 0.0
    for i, run_branch in enumerate(mask):
        block = start + i
        t += float(et.conv[block])
        if run_branch:
            t += float(et.branch[block])
            now = cdf(dist, t)
            value += held * (now - before)
            before = now
            held = scores[block] if rule == "latest" else max(held, scores[block])
    return value + held * (1.0 - before)


def expected_accuracy(mask: ArrayLike, scores: ArrayLike, et: ETProfile, dist: Distribution, start: int = 0,
                      elapsed: float = 0.0, held: float = 0.0,
                      rule: str = "latest") -> float | npt.NDArray[np.float64]:
    """E(x) of one plan (1-D mask) or of each row of a 2-D mask."""
    masks = np.asarray(mask)
    score_list = [float(s) for s in np.asarray(scores, dtype=np.float64)]
    if masks.ndim == 2:
        return np.array([_evaluate([int(v) for v in row], score_list, et, dist, start, elapsed, held, rule)
                         for row in masks])
    return _evaluate([int(v) for v in masks], score_list, et, dist, start, elapsed, held, rule)


def _preferred(a_value: float, a_mask: list[int], b_value: float, b_mask: list[int]) -> bool:
    if a_value > b_value + TIE_TOLERANCE:
        return True
    if b_value > a_value + TIE_TOLERANCE:
        return False
    if sum(a_mask) != sum(b_mask):
        return sum(a_mask) < sum(b_mask)
    return a_mask < b_mask


def _greedy_from(mask: list[int], first: int,
                 evaluate: Callable[[list[int]], float]) -> tuple[list[int], float, int]:
    """Add the branch (at a position >= first) that raises E most, until none does."""
    mask = list(mask)
    current = evaluate(mask)
    evaluations = 1
    while True:
        chosen: int | None = None
        chosen_value = current + TIE_TOLERANCE
        for j in range(first, len(mask)):
            if mask[j]:
                continue
            value = evaluate([*mask[:j], 1, *mask[j + 1:]])
            evaluations += 1
            # Equal raises go to the later branch: the lexicographically smaller mask.
            if (value > chosen_value) if chosen is None else (value >= chosen_value - TIE_TOLERANCE):
                chosen, chosen_value = j, value
        if chosen is None:
            return mask, current, evaluations
        mask[chosen] = 1
        current = evaluate(mask)


def hybrid_search(evaluate: Callable[[list[int]], float], n: int, depth: int = 4) -> tuple[list[int], float, int]:
    """The hybrid search on any objective of a whole plan of `n` branches: plain greedy, and every
    setting of the first `depth` branches completed greedily over the rest; the preferred plan wins
    (ties: fewer branches, then the smaller mask). Returns (mask, value, evaluations). Also for
    objectives the native core does not model (rule ``ensemble``'s set-dependent exit accuracies:
    :func:`einet.policies.ensemble_statistics_plan`)."""
    k = min(depth, n)
    mask, value, evaluations = _greedy_from([0] * n, 0, evaluate)
    for bits in range(2**k):
        prefix = [(bits >> i) & 1 for i in range(k)] + [0] * (n - k)
        candidate, candidate_value, count = _greedy_from(prefix, k, evaluate)
        evaluations += count
        if _preferred(candidate_value, candidate, value, mask):
            mask, value = candidate, candidate_value
    return mask, value, evaluations


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _best_of(plans: Iterable[list[int]], evaluate: Callable[[list[int]], float]) -> tuple[list[int], float]:
    """The preferred plan among `plans` (at least one)."""
    best_mask: list[int] = []
    best_value = -math.inf
    for plan in plans:
        value = evaluate(plan)
        if best_value == -math.inf or _preferred(value, plan, best_value, best_mask):
            best_mask, best_value = plan, value
    return best_mask, best_value


def _random_plans(n: int, budget: int, seed: int) -> Iterator[list[int]]:
    """`budget` plans; bit i is bit (i mod 64) of the (i // 64)-th splitmix64 draw, as in the core."""
    state, word = seed, 0
    for _ in range(budget):
        plan = []
        for i in range(n):
            if i % 64 == 0:
                state, word = _splitmix64(state)
            plan.append((word >> (i % 64)) & 1)
        yield plan


def search(scores: ArrayLike, et: ETProfile, dist: Distribution, method: str = "hybrid", depth: int = 4,
           start: int = 0, elapsed: float = 0.0, held: float = 0.0, rule: str = "latest", budget: int = 1000,
           seed: int = 0) -> Plan:
    """The same searches as :func:`einet.search`, by whole-plan evaluation."""
    score_list = [float(s) for s in np.asarray(scores, dtype=np.float64)]
    n = et.num_blocks - start

    def evaluate(mask: list[int]) -> float:
        return _evaluate(mask, score_list, et, dist, start, elapsed, held, rule)

    if method == "exhaustive":
        mask, value = _best_of((list(plan) for plan in itertools.product([0, 1], repeat=n)), evaluate)
        evaluations = 2**n
    elif method == "greedy":
        mask, value, evaluations = _greedy_from([0] * n, 0, evaluate)
    elif method == "hybrid":
        mask, value, evaluations = hybrid_search(evaluate, n, depth)
    elif method == "random":
        mask, value = _best_of(_random_plans(n, budget, seed), evaluate)
        evaluations = budget
    else:
        raise EinetValueError(f"unknown method {method!r}")
    return Plan(np.array(mask, dtype=bool), value, evaluations)


def search_batch(scores: ArrayLike, et: ETProfile, dist: Distribution, method: str = "hybrid", depth: int = 4,
                 start: int = 0, elapsed: ArrayLike = 0.0, held: ArrayLike = 0.0, rule: str = "latest",
                 budget: int = 1000, seed: int = 0, threads: int | None = None) -> BatchPlans:
    """:func:`search` for every row of ``scores``, one after another (``threads`` is ignored)."""
    rows = np.asarray(scores, dtype=np.float64)
    elapsed_all = np.broadcast_to(np.asarray(elapsed, dtype=np.float64), (rows.shape[0],))
    held_all = np.broadcast_to(np.asarray(held, dtype=np.float64), (rows.shape[0],))
    plans = [search(row, et, dist, method, depth, start, float(t0), float(h), rule, budget, seed)
             for row, t0, h in zip(rows, elapsed_all, held_all)]
    n = et.num_blocks - start
    return BatchPlans(
        np.array([p.mask for p in plans], dtype=bool).reshape(len(plans), n),
        np.array([p.value for p in plans], dtype=np.float64),
        np.array([p.evaluations for p in plans], dtype=np.uint64),
    )


def _exp_or_inf(x: float) -> float:
    """exp(x), inf where it overflows (as C++'s std::exp does; Python's math.exp raises)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


class Predictor:
    """The confidence-score predictor's MLP in plain Python: the oracle for ``einet.NativePredictor``.

    Same constructor arguments (``weights[k]`` is [out, in] as torch's nn.Linear stores it,
    ``biases[k]`` is [out]); ReLU hidden layers, sigmoid out. The input is [observed scores
    (0 where not observed), observation mask]. Each output is summed in the native order
    (bias first, then the inputs one by one) with Python floats, so the scores are bit-identical
    to the native ones (numpy's matmul sums in another order). Not validated.
    """

    def __init__(self, weights: Sequence[ArrayLike], biases: Sequence[ArrayLike], calibrated: bool) -> None:
        self.weights = [np.asarray(w, dtype=np.float64).tolist() for w in weights]
        self.biases = [np.asarray(b, dtype=np.float64).tolist() for b in biases]
        self.calibrated = bool(calibrated)

    @property
    def num_exits(self) -> int:
        return len(self.biases[-1])

    def predict(self, observed: ArrayLike, mask: ArrayLike) -> npt.NDArray[np.float64]:
        """Every exit's score; observed exits keep their value unless the predictor is calibrated."""
        seen = [bool(m) for m in np.asarray(mask).tolist()]
        values = [float(v) for v in np.asarray(observed, dtype=np.float64).tolist()]
        current = [v if s else 0.0 for v, s in zip(values, seen)] + [1.0 if s else 0.0 for s in seen]
        last = len(self.weights) - 1
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            following = []
            for row, total in zip(weight, bias):
                for w, x in zip(row, current):
                    total += w * x
                following.append(max(0.0, total) if k < last else 1.0 / (1.0 + _exp_or_inf(-total)))
            current = following
        return np.array([v if (s and not self.calibrated) else c for v, s, c in zip(values, seen, current)])


class OnlineSession:
    """A pure-Python model of ``einet._core.OnlineSession``: EINet's per-sample loop (the oracle).

    Same constructor arguments as the native session, with a :class:`Predictor` (or any object
    with ``predict(observed, mask)``) in place of the native one. ``begin()`` starts a sample with
    ``first_plan``; ``run_branch(block)`` says whether the current plan runs that block's branch;
    ``observe(block, confidence, elapsed)`` records a finished branch, moves the held answer (rule
    ``latest``: that branch; ``best``: it if strictly more confident than every earlier one), then,
    unless it was the last block, predicts every exit's score, credits the held exit its predicted
    score (0 with none held) and re-plans blocks block+1..N-1 with :func:`search`. With ``margin`` > 0
    the current plan is kept unless the new one's E beats the current plan's E under the same
    predicted scores by more than ``margin``. Inputs are not validated.
    """

    def __init__(self, predictor: Predictor, conv: ArrayLike, branch: ArrayLike, dist: Distribution, rule: str,
                 method: str, depth: int, budget: int, seed: int, first_plan: ArrayLike, margin: float) -> None:
        self.predictor = predictor
        self.et = ETProfile(conv, branch)
        self.dist, self.rule, self.method = dist, rule, method
        self.depth, self.budget, self.seed = depth, budget, seed
        self.first_plan = [bool(b) for b in np.asarray(first_plan).tolist()]
        self.margin = float(margin)
        self.begin()

    def begin(self) -> None:
        n = self.et.num_blocks
        self.observed = [0.0] * n
        self.seen = [False] * n
        self.plan = list(self.first_plan)
        self.plan_start = 0
        self.held_exit = -1
        self.best_confidence = -1.0

    def run_branch(self, block: int) -> bool:
        return self.plan_start <= block < self.plan_start + len(self.plan) and self.plan[block - self.plan_start]

    def observe(self, block: int, confidence: float, elapsed: float) -> None:
        n = self.et.num_blocks
        self.observed[block] = confidence
        self.seen[block] = True
        if self.rule == "latest" or confidence > self.best_confidence:
            self.held_exit = block
            self.best_confidence = max(confidence, self.best_confidence)
        if block + 1 >= n:
            return
        start = block + 1
        scores = self.predictor.predict(self.observed, self.seen)
        held = float(scores[self.held_exit]) if self.held_exit >= 0 else 0.0
        plan = search(scores, self.et, self.dist, self.method, self.depth, start, elapsed, held, self.rule,
                      self.budget, self.seed)
        mask = [bool(b) for b in plan.mask.tolist()]
        if self.margin > 0.0:
            current = [self.run_branch(b) for b in range(start, n)]
            kept = float(expected_accuracy(current, scores, self.et, self.dist, start, elapsed, held, self.rule))
            if plan.value <= kept + self.margin:
                mask = current
        self.plan = mask
        self.plan_start = start
