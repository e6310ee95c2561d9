"""The one registry of policies: a kind and a value build a policy; table labels are derived from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from ..errors import EinetValueError
from ..formats.profiles import CSProfile
from ..planner import (
    Distribution,
    ETProfile,
    NativePredictor,
)
from ..rules import AnswerRule, as_rule
from .base import Policy
from .einet import HEDGE_MARGIN, RANDOM_SEARCH_BUDGET, EINet
from .fixed import ConfidenceThreshold, FixedPlan, single_exit, static_plan, statistics_plan
from .oracles import Clairvoyant


@dataclass(frozen=True)
class PolicySpec:
    """A policy by kind and parameter, as deployments and bundles store it: the one registry of
    policies. The table label is derived from it, never parsed (a renamed column breaks nothing)."""

    kind: str  # a key of POLICY_KINDS
    value: float | None = None  # static: the share of exits run; dynamic: the confidence threshold

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise EinetValueError(f"unknown policy kind {self.kind!r}: expected one of {', '.join(POLICY_KINDS)}")
        if (self.kind in ("static", "dynamic")) != (self.value is not None):
            raise EinetValueError(f"policy kind {self.kind!r} {'needs' if self.value is None else 'takes no'} a value")
        if self.value is not None and not (isinstance(self.value, (int, float)) and 0.0 < self.value <= 1.0):
            raise EinetValueError(f"policy {self.kind!r}: value must be a number in (0, 1], got {self.value!r}")

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
            raise EinetValueError(f"policy {self.label!r} needs its predictor")
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
    profile the EINets plan with, their own planning time folded in (evaluation.simulate.charged); default `et`."""
    rule = as_rule(rule)
    statistics = cast(FixedPlan, PolicySpec("statistics").build(et, dist, holdout, rule))
    return [spec.build(et, dist, holdout, rule, predictor, signal, einet_et, statistics)
            for spec in STANDARD_POLICIES if not (spec.kind == "clairvoyant" and rule.name == "ensemble")]
