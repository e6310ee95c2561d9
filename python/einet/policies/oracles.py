"""References no deployable policy can pass: the clairvoyant ceiling and the nearest-neighbour bound."""

from __future__ import annotations

from typing import cast

import numpy as np

from ..errors import EinetValueError
from ..formats.profiles import CSProfile
from ..planner import (
    Distribution,
    ETProfile,
    search,
)
from ..rules import AnswerRule, as_rule, ensemble_prefix_correct
from ..signals import exit_signals
from .base import Policy
from .fixed import statistics_plan


class Clairvoyant(Policy):
    """A ceiling no real policy can pass: the best plan given the sample's true per-exit correctness.

    It still does not know tau. Exhaustive search up to 20 blocks, hybrid beyond.
    """

    name = "clairvoyant"
    needs_oracle = True

    def __init__(self, et: ETProfile, dist: Distribution, rule: str | AnswerRule = "latest") -> None:
        rule = as_rule(rule)
        if rule.name == "ensemble":
            raise EinetValueError("the clairvoyant ceiling is defined for rules latest and best: under ensemble an "
                                  "exit's correctness depends on the branches run before it")
        self.et, self.dist, self.rule, self.held = et, dist, rule.native, rule.time_zero_score
        self.method = "exhaustive" if et.num_blocks <= 20 else "hybrid"
        self._cache: dict[bytes, np.ndarray] = {}

    def begin(self, oracle: np.ndarray | None = None) -> None:
        if oracle is None:
            raise EinetValueError("the clairvoyant policy needs each sample's per-exit correctness (simulation only)")
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
            raise EinetValueError(f"k must be in [1, {holdout.num_samples}], got {k}")
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
