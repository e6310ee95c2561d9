"""Exit policies: EINet and the baselines it is compared with (docs/design.md section 9, evaluation).

A policy decides, block by block, whether to run the exit branch, and may stop
the inference early. The same objects drive the trace-driven simulator
(:mod:`einet.simulate`, fed with CS-profile confidences and ET-profile times)
and the real-time runtime (:mod:`einet.runtime`, fed with the live model), so
what is evaluated is what runs. The protocol:

- ``begin(oracle=None)`` before each sample (``oracle``: the sample's per-exit
  correctness, which only the clairvoyant ceiling may read);
- ``run_branch(block, elapsed)`` after block's conv part: run its branch?
- ``observe(block, confidence, elapsed)`` after a branch ran: True stops the inference
  (``confidence``: the held answer's under rule ``ensemble``, else the exit's own);
- policies with ``needs_log_probs`` are also given the exit's log-probabilities first,
  through ``record_log_probs(block, log_probs)``.

Numpy and the native planner only: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from . import _core
from .planner import (
    Distribution,
    ETProfile,
    NativePredictor,
    expected_accuracy,
    online_step,
    search,
    search_options,
)
from .profiling import CSProfile
from .rules import AnswerRule, as_rule, ensemble_prefix_correct
from .signals import SIGNALS, exit_signals, signal_index


class Policy:
    """Base class: run every branch, never stop early (the multi-exit network without skipping)."""

    name = "all exits"
    needs_oracle = False
    needs_log_probs = False
    spec: PolicySpec | None = None  # what it was built from (PolicySpec.build), for deployments

    def begin(self, oracle: np.ndarray | None = None) -> None:
        """A new sample starts."""

    def record_log_probs(self, block: int, log_probs: np.ndarray) -> None:
        """The log-probabilities of the branch that just ran (only for policies with `needs_log_probs`)."""

    def run_branch(self, block: int, elapsed: float) -> bool:
        return True

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        return False


class FixedPlan(Policy):
    """A plan fixed before the inference: the same branches for every sample."""

    def __init__(self, mask: Sequence[bool] | np.ndarray, name: str) -> None:
        self.mask = np.asarray(mask, dtype=bool)
        if not self.mask.any():
            raise ValueError(f"{name}: a fixed plan must run at least one branch")
        self.name = name

    def run_branch(self, block: int, elapsed: float) -> bool:
        return bool(self.mask[block])


def static_plan(num_exits: int, fraction: float) -> FixedPlan:
    """Run `fraction` of the exits, evenly spaced, the last always on (the paper's static plans)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, round(fraction * num_exits))
    chosen = {int(np.ceil((j + 1) * num_exits / count)) - 1 for j in range(count)}
    mask = np.zeros(num_exits, dtype=bool)
    mask[sorted(chosen)] = True
    return FixedPlan(mask, f"static {round(100 * fraction)}%")


def single_exit(num_exits: int, name: str = "single-exit") -> FixedPlan:
    """The classic single-exit model: only the final classifier."""
    mask = np.zeros(num_exits, dtype=bool)
    mask[-1] = True
    return FixedPlan(mask, name)


def statistics_plan(holdout: CSProfile | Sequence[float], et: ETProfile, dist: Distribution,
                    rule: str | AnswerRule = "latest", method: str = "hybrid",
                    memo: dict[tuple[int, ...], float] | None = None) -> FixedPlan:
    """The statistics near-optimal plan: the search on dataset-mean exit accuracies, one plan for all.

    `holdout`: the held-out CS-profile (or its per-exit accuracies, for rules other than
    ``ensemble``). Under rule ``ensemble`` an exit's accuracy depends on which earlier branches
    the plan runs, so the plan comes from :func:`ensemble_statistics_plan` instead (`memo`: its
    held-out accuracies of exit sets, kept by a caller that plans again, e.g. an adaptive runtime)."""
    rule = as_rule(rule)
    if rule.name == "ensemble":
        if not isinstance(holdout, CSProfile):
            raise TypeError("rule 'ensemble' needs the held-out CS-profile, not per-exit accuracies")
        return FixedPlan(ensemble_statistics_plan(holdout, et, dist, rule, memo=memo), "statistics")
    mean_accuracy = holdout.accuracy_per_exit() if isinstance(holdout, CSProfile) else holdout
    plan = search(np.asarray(mean_accuracy, dtype=np.float64), et, dist, method=method, rule=rule.native,
                  held=rule.held_credit)
    mask = plan.mask if plan.mask.any() else single_exit(et.num_blocks).mask
    return FixedPlan(mask, "statistics")


def ensemble_statistics_plan(holdout: CSProfile, et: ETProfile, dist: Distribution, rule: AnswerRule,
                             depth: int = 4, memo: dict[tuple[int, ...], float] | None = None) -> np.ndarray:
    """The best single plan under rule ``ensemble``, exactly scored on held-out data.

    For a fixed plan every sample's branches finish at the same times, so the held-out mean of
    E is E with s_q = the held-out accuracy of the ensemble of the plan's first q branches. Those
    scores depend on the plan (a set, not one exit), which the native search does not model:
    the hybrid search (docs/design.md section 4: enumerate the next `depth` branches, greedy over the rest) runs
    here in Python on that exact objective, memoising each set's accuracy (in `memo`, if given:
    they depend on the held-out data and the rule only, not on the profile or distribution)."""
    log_probs, labels = holdout.dense_log_probs(), holdout.labels
    weights = np.asarray(rule.weights, dtype=np.float32)
    accuracy: dict[tuple[int, ...], float] = {} if memo is None else memo

    def set_accuracy(chosen: tuple[int, ...]) -> float:
        if chosen not in accuracy:
            total = (log_probs[:, list(chosen)] * weights[list(chosen)][None, :, None]).sum(1)
            accuracy[chosen] = float((total.argmax(1) == labels).mean())
        return accuracy[chosen]

    def value(mask: np.ndarray) -> float:
        ran = np.flatnonzero(mask)
        scores = np.zeros(et.num_blocks)
        for q, k in enumerate(ran):
            scores[k] = set_accuracy(tuple(ran[:q + 1].tolist()))
        return cast(float, expected_accuracy(mask, scores, et, dist, held=rule.held_credit))  # one plan: a float

    mask = hybrid_search(value, et.num_blocks, depth)
    return mask if mask.any() else single_exit(et.num_blocks).mask


def hybrid_search(value: Callable[[np.ndarray], float], n: int, depth: int = 4) -> np.ndarray:
    """Hybrid search on any objective of a whole mask: every setting of the first `depth` branches,
    each completed greedily (adding the branch that raises `value` most until none does), plus
    plain greedy from the empty plan; the best wins (ties: the earlier candidate)."""

    def greedy(mask: np.ndarray, free_from: int) -> tuple[float, np.ndarray]:
        best = value(mask)
        while True:
            gains = []
            for i in range(free_from, n):
                if not mask[i]:
                    trial = mask.copy()
                    trial[i] = True
                    gains.append((value(trial), i))
            top = max(gains, default=(best, -1), key=lambda g: g[0])
            if top[0] <= best:
                return best, mask
            best, mask = top[0], mask.copy()
            mask[top[1]] = True

    depth = min(depth, n)
    candidates = [greedy(np.zeros(n, dtype=bool), 0)]
    for setting in range(1 << depth):
        prefix = np.zeros(n, dtype=bool)
        prefix[:depth] = [(setting >> (depth - 1 - j)) & 1 for j in range(depth)]
        candidates.append(greedy(prefix, depth))
    return max(candidates, key=lambda c: c[0])[1]


class ConfidenceThreshold(Policy):
    """Classic early exit: run every branch in order, stop at the first confidence >= threshold."""

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"dynamic {round(100 * threshold)}%"

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        return confidence >= self.threshold


class EINet(Policy):
    """Per-sample elastic planning: after every branch, predict the unseen exits' scores and re-plan.

    The per-sample loop runs natively (``einet._core.OnlineSession``): each step
    is one short call, since it sits between two blocks of the inference.
    ``method="random"`` gives the paper's "EINet with random search" ablation. To predict a real
    runtime, plan with the ET-profile from :meth:`einet.runtime.ElasticRuntime.calibrate`,
    which includes the time this policy itself takes.

    Two refinements over the paper, both off here and on in einet's default (see
    :func:`standard_policies`): ``first_plan`` (e.g. the statistics plan) is the plan before
    anything is observed, exact dataset statistics instead of the predictor's estimate of
    them; and ``margin`` keeps the current plan unless a re-plan promises more than that much
    extra accuracy under the predicted scores. Together they make EINet fall back to the
    statistics plan unless the predictor sees a clear gain: on every model measured, the
    paper's always-re-plan variant was at best level with that plan and at worst 0.2 pp below.
    """

    def __init__(self, predictor: NativePredictor, et: ETProfile, dist: Distribution,
                 rule: str | AnswerRule = "latest", method: str = "hybrid", depth: int = 4, budget: int = 1000,
                 seed: int = 0, name: str | None = None, first_plan: Sequence[bool] | np.ndarray | None = None,
                 margin: float = 0.0, signal: str = "confidence") -> None:
        if predictor.num_exits != et.num_blocks:
            raise ValueError(f"the predictor covers {predictor.num_exits} exits, the ET-profile "
                             f"{et.num_blocks} blocks")
        self.name = name or ("EINet" if method == "hybrid" else f"EINet ({method} search)")
        rule = as_rule(rule)
        # What the predictor reads per observed exit (einet.signals; the one it was fitted on).
        self.signal = signal_index(signal)
        if self.signal and rule.name == "ensemble":
            raise ValueError(f"signal {signal!r} is for rules latest and best: under rule ensemble the predictor "
                             "reads the ensemble's confidence")
        self.needs_log_probs = self.signal > 0
        self._observed_signal = 0.0
        self._last_class = -1  # for signal agreement: the previous observed exit's class
        if first_plan is None:  # the paper: the predictor's estimate with nothing observed
            nothing = np.zeros(et.num_blocks)
            first_plan = online_step(predictor, nothing, nothing.astype(bool), et, dist, 0, 0.0,
                                     held=rule.held_credit, rule=rule.native, method=method, depth=depth,
                                     budget=budget, seed=seed).plan.mask
        first = np.asarray(first_plan, dtype=bool)
        if first.shape != (et.num_blocks,):
            raise ValueError(f"first_plan must have {et.num_blocks} entries, got shape {first.shape}")
        # The first plan is the same for every sample; re-plans happen natively after each branch.
        # Under rule ensemble the predictor scores ensembles and sees the ensemble's confidence
        # (fit it with that rule), so the native session plans as rule latest.
        self.session = _core.OnlineSession(predictor, et.conv, et.branch, dist, rule.native,
                                           search_options(method, depth, budget, seed), first, margin)

    def begin(self, oracle: np.ndarray | None = None) -> None:
        self.session.begin()
        self._last_class = -1

    def run_branch(self, block: int, elapsed: float) -> bool:
        return self.session.run_branch(block)

    def record_log_probs(self, block: int, log_probs: np.ndarray) -> None:
        if SIGNALS[self.signal] == "agreement":
            predicted = int(log_probs.argmax())
            self._observed_signal = float(predicted == self._last_class)
            self._last_class = predicted
        else:
            self._observed_signal = float(exit_signals(log_probs)[self.signal])

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        self.session.observe(block, self._observed_signal if self.signal else confidence, elapsed)
        return False


class Clairvoyant(Policy):
    """A ceiling no real policy can pass: the best plan given the sample's true per-exit correctness.

    It still does not know tau. Exhaustive search up to 20 blocks, hybrid beyond.
    """

    name = "clairvoyant"
    needs_oracle = True

    def __init__(self, et: ETProfile, dist: Distribution, rule: str | AnswerRule = "latest") -> None:
        rule = as_rule(rule)
        if rule.name == "ensemble":
            raise ValueError("the clairvoyant ceiling is defined for rules latest and best: under ensemble an "
                             "exit's correctness depends on the branches run before it")
        self.et, self.dist, self.rule, self.held = et, dist, rule.native, rule.held_credit
        self.method = "exhaustive" if et.num_blocks <= 20 else "hybrid"
        self._cache: dict[bytes, np.ndarray] = {}

    def begin(self, oracle: np.ndarray | None = None) -> None:
        if oracle is None:
            raise ValueError("the clairvoyant policy needs each sample's per-exit correctness (simulation only)")
        key = np.asarray(oracle, dtype=bool).tobytes()
        if key not in self._cache:
            scores = np.asarray(oracle, dtype=np.float64)
            self._cache[key] = search(scores, self.et, self.dist, method=self.method, rule=self.rule,
                                      held=self.held).mask
        self.mask = self._cache[key]

    def run_branch(self, block: int, elapsed: float) -> bool:
        return bool(self.mask[block])


class NearestNeighbours(Policy):
    """A value-of-information reference: the best a predictor on these signals can reach.

    After each branch, the `k` held-out samples closest to this one in every observed exit's
    signals (confidence, entropy, margin, and whether its class agrees with the previous
    observed exit's) stand in for it: their true outcomes are the scores (under rule
    ``ensemble``: whether the ensemble of the observed exits plus each next exit is right),
    and the remaining blocks are re-planned. Before anything is observed every held-out
    sample counts: the statistics plan. A reference, not a deployable policy: it keeps the
    whole held-out split and searches it at every step.
    """

    needs_log_probs = True
    _last_class: int  # the previous observed exit's class, set by record_log_probs

    def __init__(self, holdout: CSProfile, et: ETProfile, dist: Distribution, rule: str | AnswerRule = "latest",
                 k: int = 150, name: str = "nearest-neighbour reference") -> None:
        rule = as_rule(rule)
        if not 1 <= k <= holdout.num_samples:
            raise ValueError(f"k must be in [1, {holdout.num_samples}], got {k}")
        self.et, self.dist, self.rule, self.k, self.name = et, dist, rule, k, name
        self.log_probs = holdout.dense_log_probs()
        self.labels = holdout.labels
        self.prediction = self.log_probs.argmax(2)
        self.signals = exit_signals(self.log_probs)  # [S, N, 3]
        self.scale = self.signals.reshape(-1, 3).std(0) + 1e-6
        self.correct = holdout.correct
        self.first = statistics_plan(holdout, et, dist, rule).mask

    def begin(self, oracle: np.ndarray | None = None) -> None:
        self.observed: list[int] = []
        self.features: list[np.ndarray] = []
        self.mask = self.first.copy()

    def record_log_probs(self, block: int, log_probs: np.ndarray) -> None:
        signals = exit_signals(log_probs[None, None, :])[0, 0] / self.scale
        agrees = float(self.observed != [] and int(log_probs.argmax()) == self._last_class)
        self._last_class = int(log_probs.argmax())
        self.features.append(np.append(signals, agrees))
        self.observed.append(block)

    def run_branch(self, block: int, elapsed: float) -> bool:
        return bool(self.mask[block])

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        if block + 1 >= self.et.num_blocks:
            return False
        ran = self.observed
        held_out = [self.signals[:, ran] / self.scale]
        previous = self.prediction[:, [ran[0], *ran[:-1]]]
        agreement = (self.prediction[:, ran] == previous).astype(np.float32)
        agreement[:, 0] = 0.0
        held_out.append(agreement[:, :, None])
        distance = ((np.concatenate(held_out, 2) - np.stack(self.features)[None]) ** 2).sum((1, 2))
        neighbours = np.argpartition(distance, self.k - 1)[:self.k]
        if self.rule.name == "ensemble":
            mask = np.zeros((self.k, self.et.num_blocks), dtype=bool)
            mask[:, ran] = True
            weights = cast("tuple[float, ...]", self.rule.weights)  # rule ensemble: AnswerRule ensures weights
            right, _ = ensemble_prefix_correct(self.log_probs[neighbours], self.labels[neighbours], weights, mask)
            scores = right.mean(0)
        else:
            scores = self.correct[neighbours].mean(0)
        plan = search(scores, self.et, self.dist, start=block + 1, elapsed=elapsed, held=float(scores[block]),
                      rule=self.rule.native)
        self.mask[block + 1:] = plan.mask
        return False


RANDOM_SEARCH_BUDGET = 100  # plans drawn per step by "EINet (random search)"
HEDGE_MARGIN = 0.005  # einet's EINet: re-plan only for half a point of predicted accuracy


@dataclass(frozen=True)
class PolicySpec:
    """A policy by kind and parameter, as deployments and bundles store it: the one registry of
    policies. The table label is derived from it, never parsed (a renamed column breaks nothing)."""

    kind: str  # a key of POLICY_KINDS
    value: float | None = None  # static: the share of exits run; dynamic: the confidence threshold

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy kind {self.kind!r}: expected one of {', '.join(POLICY_KINDS)}")
        if (self.kind in ("static", "dynamic")) != (self.value is not None):
            raise ValueError(f"policy kind {self.kind!r} {'needs' if self.value is None else 'takes no'} a value")
        if self.value is not None and not (isinstance(self.value, (int, float)) and 0.0 < self.value <= 1.0):
            raise ValueError(f"policy {self.kind!r}: value must be a number in (0, 1], got {self.value!r}")

    @property
    def label(self) -> str:
        """The policy's name in tables (and its Policy.name)."""
        if self.value is not None:
            return f"{self.kind} {round(100 * self.value)}%"
        return POLICY_KINDS[self.kind]

    @property
    def uses_predictor(self) -> bool:
        return self.kind.startswith("einet")

    @property
    def plans(self) -> bool:
        """Whether it is planned from the profile and the exit-time distribution (an adaptive runtime
        plans it again as they move): EINet and the statistics plan."""
        return self.uses_predictor or self.kind == "statistics"

    @property
    def deployable(self) -> bool:
        """Not an oracle, not a slower ablation of EINet."""
        return self.kind not in ("clairvoyant", "einet-random")

    def build(self, et: ETProfile, dist: Distribution, holdout: CSProfile, rule: str | AnswerRule = "latest",
              predictor: NativePredictor | None = None, signal: str = "confidence",
              einet_et: ETProfile | None = None, statistics: FixedPlan | None = None,
              memo: dict[tuple[int, ...], float] | None = None) -> Policy:
        """The policy for this profile and distribution (`holdout`: the held-out CS-profile its plans
        come from; `einet_et`: the profile EINets plan with, their own planning folded in; `statistics`:
        the statistics plan, when the caller has it already; `memo`: held-out accuracies of exit sets
        kept between calls by a caller that plans again, see :func:`statistics_plan`)."""
        rule = as_rule(rule)
        n, planned = et.num_blocks, et if einet_et is None else einet_et
        if self.uses_predictor and predictor is None:
            raise ValueError(f"policy {self.label!r} needs its predictor")
        policy: Policy
        if self.kind in ("statistics", "einet"):
            statistics = statistics or statistics_plan(holdout, et, dist, rule, memo=memo)
        if self.kind == "einet":
            assert predictor is not None and statistics is not None
            policy = EINet(predictor, planned, dist, rule, first_plan=statistics.mask, margin=HEDGE_MARGIN,
                           signal=signal)
        elif self.kind == "einet-paper":
            assert predictor is not None
            policy = EINet(predictor, planned, dist, rule, name=self.label, signal=signal)
        elif self.kind == "einet-random":
            assert predictor is not None
            policy = EINet(predictor, planned, dist, rule, method="random", budget=RANDOM_SEARCH_BUDGET,
                           name=self.label, signal=signal)
        elif self.kind == "static":
            assert self.value is not None
            policy = static_plan(n, self.value)
        elif self.kind == "dynamic":
            assert self.value is not None
            policy = ConfidenceThreshold(self.value)
        elif self.kind == "statistics":
            assert statistics is not None
            policy = statistics
        elif self.kind == "single-exit":
            policy = single_exit(n)
        else:
            policy = Clairvoyant(et, dist, rule)
        policy.spec = self
        return policy


# kind -> table label (static and dynamic: "<kind> <value>%")
POLICY_KINDS = {"einet": "EINet", "einet-paper": "EINet (paper)", "einet-random": "EINet (random search)",
                "static": "static", "dynamic": "dynamic", "statistics": "statistics", "single-exit": "single-exit",
                "clairvoyant": "clairvoyant"}

# The paper's comparison, in table order: EINet first, the clairvoyant ceiling last.
STANDARD_POLICIES = (PolicySpec("einet"), PolicySpec("einet-paper"), PolicySpec("einet-random"),
                     PolicySpec("static", 0.25), PolicySpec("static", 0.5), PolicySpec("static", 1.0),
                     PolicySpec("dynamic", 0.90), PolicySpec("dynamic", 0.95), PolicySpec("dynamic", 0.99),
                     PolicySpec("statistics"), PolicySpec("single-exit"), PolicySpec("clairvoyant"))


def standard_policies(et: ETProfile, dist: Distribution, predictor: NativePredictor, holdout: CSProfile,
                      rule: str | AnswerRule = "latest", signal: str = "confidence",
                      einet_et: ETProfile | None = None) -> list[Policy]:
    """Every policy of the paper's comparison (:data:`STANDARD_POLICIES`) for one exit-time
    distribution, EINet first, the clairvoyant ceiling last (not under rule ensemble). `holdout`:
    the held-out CS-profile (the statistics plan and EINet's first plan come from it; never the
    test split).

    "EINet" is einet's default: the statistics plan first, re-planned only for a predicted gain
    of HEDGE_MARGIN. "EINet (paper)" is the paper's: the predictor's first plan, always re-planned.
    `signal`: what the predictor reads per observed exit (the one it was fitted on). `einet_et`: the
    profile the EINets plan with, their own planning time folded in (einet.simulate.charged); default `et`."""
    rule = as_rule(rule)
    statistics = cast(FixedPlan, PolicySpec("statistics").build(et, dist, holdout, rule))
    return [spec.build(et, dist, holdout, rule, predictor, signal, einet_et, statistics)
            for spec in STANDARD_POLICIES if not (spec.kind == "clairvoyant" and rule.name == "ensemble")]
