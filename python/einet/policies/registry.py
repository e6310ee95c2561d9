"""The one policy factory: a policy by kind (:class:`PolicySpec`) and the parts fitted for it become
a policy here, and nowhere else (selection, bundles, the demo and the adaptive runtime all build
through :func:`build_policy`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EinetValueError
from ..formats.profiles import CSProfile
from ..planner import Distribution, ETProfile, NativePredictor
from ..rules import AnswerRule, as_rule
from .base import Policy
from .einet import HEDGE_MARGIN, RANDOM_SEARCH_BUDGET, EINet
from .fixed import ConfidenceThreshold, FixedPlan, single_exit, static_plan, statistics_plan
from .kinds import POLICY_KINDS, STANDARD_POLICIES, PolicySpec
from .oracles import Clairvoyant

__all__ = ["POLICY_KINDS", "STANDARD_POLICIES", "PolicySpec", "build_policy", "standard_policies"]


def build_policy(spec: PolicySpec, et: ETProfile, dist: Distribution, rule: str | AnswerRule = "latest", *,
                 holdout: CSProfile | None = None, plan: Sequence[bool] | np.ndarray | None = None,
                 predictor: NativePredictor | None = None, signal: str = "confidence",
                 einet_et: ETProfile | None = None, memo: dict[tuple[int, ...], float] | None = None) -> Policy:
    """The policy `spec` names, for this profile and distribution.

    The statistics plan (the statistics policy; einet's EINet plans it first) is planned from
    `holdout` (the held-out CS-profile) for `et` and `dist` when given, else it is `plan` (one a
    deployment stored). `einet_et`: the profile EINets plan with, their own planning folded in
    (default `et`). `memo`: held-out accuracies of exit sets kept between calls by a caller that
    plans again (see :func:`statistics_plan`)."""
    rule = as_rule(rule)
    if spec.uses_predictor and predictor is None:
        raise EinetValueError(f"policy {spec.label!r} needs its predictor")
    if spec.kind in ("statistics", "einet"):
        if holdout is not None:
            plan = statistics_plan(holdout, et, dist, rule, memo=memo).mask
        elif plan is None:
            raise EinetValueError(f"policy {spec.label!r} needs the held-out CS-profile or its statistics plan")
    planned = et if einet_et is None else einet_et
    policy: Policy
    if spec.kind == "einet":
        assert predictor is not None
        policy = EINet(predictor, planned, dist, rule, first_plan=plan, margin=HEDGE_MARGIN, signal=signal)
    elif spec.kind == "einet-paper":
        assert predictor is not None
        policy = EINet(predictor, planned, dist, rule, name=spec.label, signal=signal)
    elif spec.kind == "einet-random":
        assert predictor is not None
        policy = EINet(predictor, planned, dist, rule, method="random", budget=RANDOM_SEARCH_BUDGET,
                       name=spec.label, signal=signal)
    elif spec.kind == "static":
        assert spec.value is not None
        policy = static_plan(et.num_blocks, spec.value)
    elif spec.kind == "dynamic":
        assert spec.value is not None
        policy = ConfidenceThreshold(spec.value)
    elif spec.kind == "statistics":
        policy = FixedPlan(np.asarray(plan, dtype=bool), spec.label)
    elif spec.kind == "single-exit":
        policy = single_exit(et.num_blocks)
    else:
        policy = Clairvoyant(et, dist, rule)
    policy.spec = spec
    return policy


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
    plan = statistics_plan(holdout, et, dist, rule).mask  # planned once for both policies that use it
    return [build_policy(spec, et, dist, rule, plan=plan, predictor=predictor, signal=signal, einet_et=einet_et)
            for spec in STANDARD_POLICIES if not (spec.kind == "clairvoyant" and rule.name == "ensemble")]
