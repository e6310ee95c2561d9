"""Plans fixed before the inference (static, single-exit, the statistics plan) and classic early exit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from ..errors import EinetTypeError, EinetValueError
from ..formats.profiles import CSProfile
from ..planner import Distribution, ETProfile, expected_accuracy, search
from ..reference import hybrid_search
from ..rules import AnswerRule, as_rule
from .base import EveryExit, Policy


class FixedPlan(Policy):
    """A plan fixed before the inference: the same branches for every sample."""

    def __init__(self, mask: Sequence[bool] | np.ndarray, name: str) -> None:
        mask = np.array(mask, dtype=bool)  # a copy: the caller's array may change
        if not mask.any():
            raise EinetValueError(f"{name}: a fixed plan must run at least one branch")
        mask.flags.writeable = False
        self._mask = mask
        # Asked between blocks, where a tuple look-up costs a third of numpy's
        self._runs: tuple[bool, ...] = tuple(mask.tolist())
        self.name = name

    @property
    def mask(self) -> np.ndarray:
        """Which branches it runs (read-only: a plan is fixed)."""
        return self._mask

    def run_branch(self, block: int, elapsed: float) -> bool:
        return self._runs[block]


def static_plan(num_exits: int, fraction: float) -> FixedPlan:
    """Run `fraction` of the exits, evenly spaced, the last always on (the paper's static plans)."""
    if not 0.0 < fraction <= 1.0:
        raise EinetValueError(f"fraction must be in (0, 1], got {fraction}")
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
            raise EinetTypeError("rule 'ensemble' needs the held-out CS-profile, not per-exit accuracies")
        return FixedPlan(ensemble_statistics_plan(holdout, et, dist, rule, memo=memo), "statistics")
    mean_accuracy = holdout.accuracy_per_exit() if isinstance(holdout, CSProfile) else holdout
    plan = search(np.asarray(mean_accuracy, dtype=np.float64), et, dist, method=method, rule=rule.native,
                  held=rule.time_zero_score)
    mask = plan.mask if plan.mask.any() else single_exit(et.num_blocks).mask
    return FixedPlan(mask, "statistics")


def ensemble_statistics_plan(holdout: CSProfile, et: ETProfile, dist: Distribution, rule: AnswerRule,
                             depth: int = 4, memo: dict[tuple[int, ...], float] | None = None) -> np.ndarray:
    """The best single plan under rule ``ensemble``, exactly scored on held-out data.

    For a fixed plan every sample's branches finish at the same times, so the held-out mean of
    E is E with s_q = the held-out accuracy of the ensemble of the plan's first q branches. Those
    scores depend on the plan (a set, not one exit), which the native search does not model:
    the reference's hybrid search (:func:`einet.reference.hybrid_search`, the native one's rules)
    runs on that exact objective, memoising each set's accuracy (in `memo`, if given:
    they depend on the held-out data and the rule only, not on the profile or distribution)."""
    log_probs, labels = holdout.dense_log_probs(), holdout.labels
    weights = np.asarray(rule.weights, dtype=np.float32)
    accuracy: dict[tuple[int, ...], float] = {} if memo is None else memo

    def set_accuracy(chosen: tuple[int, ...]) -> float:
        if chosen not in accuracy:
            total = (log_probs[:, list(chosen)] * weights[list(chosen)][None, :, None]).sum(1)
            accuracy[chosen] = float((total.argmax(1) == labels).mean())
        return accuracy[chosen]

    def value(plan: list[int]) -> float:
        mask = np.array(plan, dtype=bool)
        ran = np.flatnonzero(mask)
        scores = np.zeros(et.num_blocks)
        for q, k in enumerate(ran):
            scores[k] = set_accuracy(tuple(ran[:q + 1].tolist()))
        return cast(float, expected_accuracy(mask, scores, et, dist, held=rule.time_zero_score))  # one plan: a float

    mask = np.array(hybrid_search(value, et.num_blocks, depth)[0], dtype=bool)
    return mask if mask.any() else single_exit(et.num_blocks).mask


class ConfidenceThreshold(EveryExit):
    """Classic early exit: run every branch in order, stop at the first confidence >= threshold."""

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold <= 1.0:
            raise EinetValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"dynamic {round(100 * threshold)}%"

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        return confidence >= self.threshold
