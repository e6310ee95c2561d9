"""Deploy what measures best: choose the policy, the output rule and the time-zero answer on
held-out data only, and write the choice to a file the runtime and ``einet demo`` use.

Selection never sees the test split. The held-out split is cut in two halves: everything that
is fitted (ensemble weights, the predictor, the statistics plan, the time-zero answer) is fitted
on the first, and every candidate is scored on the second, exactly (tau integrated out), under
each exit-time distribution asked for. The winner is then refitted on the whole held-out split
and saved: a JSON file naming the policy and the rule, beside the predictor it needs.
A user thus never ships a configuration that measured worse on data it was not fitted on.

A policy that plans pays for it: EINet re-plans after every branch it runs, and on a CPU the
runtime waits for it (:meth:`einet.runtime.ElasticRuntime.calibrate` folds that time into the
branch times; on CUDA it overlaps the queued kernels, and the charge overstates it). The EINet
candidates are therefore planned and scored with the paper's EINet's planning time, timed once on
this machine (:func:`einet.evaluation.simulate.planning_seconds`) and recorded in the deployment, added to
every branch: next to a paper's branch (100-270 us on our CPU) it is a few percent, next to a
light exit (28-37 us) half again.

The network can be chosen the same way (:func:`select_network`): several networks for the same
task (another recipe, light exits, a thumbnail exit, a second look), each selected as above under
the *same* exit times in seconds, and the one whose best configuration scored highest on the
held-out data is deployed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EinetTypeError, EinetValueError
from ..formats.deployment import (
    DEPLOYED_PREDICTOR,
    DEPLOYMENT_NAME,
    Deployment,
    checked_record,
    deployment_from_record,
    deployment_record,
    load_deployment,
    write_deployment,
)
from ..formats.profiles import CSProfile
from ..planner import Distribution, ETProfile, NativePredictor
from ..policies import (
    DEPLOYABLE_KINDS,
    STANDARD_POLICIES,
    EINet,
    FixedPlan,
    Policy,
    PolicySpec,
    build_policy,
    statistics_plan,
)
from ..rules import RULES, AnswerRule, time_zero_answer

__all__ = ["DEPLOYED_PREDICTOR", "DEPLOYMENT_NAME", "Candidate", "Deployment", "deployed_policy",
           "deployment_from_record", "deployment_record", "held_out_score", "load_deployment", "planned_profile",
           "save_deployment", "select", "select_network"]


def planned_profile(deployment: Deployment, et: ETProfile) -> ETProfile:
    """The profile a deployed EINet plans and is scored with: `et` with its own planning time per branch,
    as selection charged it; other policies plan with `et` itself."""
    from .simulate import charged

    return charged(et, deployment.planning_seconds) if deployment.spec.uses_predictor else et


def deployed_policy(deployment: Deployment, et: ETProfile, dist: Distribution,
                    predictor: NativePredictor | None = None, holdout: CSProfile | None = None,
                    memo: dict[tuple[int, ...], float] | None = None) -> Policy:
    """The one way a deployment becomes its policy, for ET-profile `et` (the device's, without EINet's
    planning: :func:`planned_profile` adds it) and `dist`: how selection scores every candidate, and
    what a bundle, the demo and the adaptive runtime run. `holdout`: the held-out CS-profile the
    statistics plan (EINet's first plan) is planned again from, for `et` and `dist`; without it the
    plan stored at selection runs. `memo`: see :func:`einet.policies.statistics_plan`."""
    for name, plan in (("mask", deployment.mask), ("first_plan", deployment.first_plan)):
        if plan is not None and len(plan) != et.num_blocks:
            raise EinetValueError(f"the deployment's {name} has {len(plan)} exits but the ET-profile {et.num_blocks} "
                                  "blocks: it was selected for another network")
    return build_policy(deployment.spec, et, dist, deployment.rule, holdout=holdout, plan=deployment.stored_plan,
                        predictor=predictor, signal=deployment.signal, einet_et=planned_profile(deployment, et),
                        memo=memo)


@dataclass(frozen=True)
class Candidate:
    """One configuration selection scores: a policy, a rule, whether a time-zero answer is held, and
    what EINet's predictor reads. Rendered (:attr:`label`) only for display and the deployment's scores."""

    spec: PolicySpec
    rule: str
    time_zero: bool
    signal: str = "confidence"

    @property
    def label(self) -> str:
        """e.g. "EINet | latest + time-zero | entropy"."""
        zero = " + time-zero" if self.time_zero else ""
        signal = "" if self.signal == "confidence" else f" | {self.signal}"
        return f"{self.spec.label} | {self.rule}{zero}{signal}"

    def deployment(self, rule: AnswerRule, dist: str, planning: float, **fields: Any) -> Deployment:
        """This candidate as a deployment (`rule`: its rule as fitted; `planning`: EINet's charge per branch)."""
        uses_predictor = self.spec.uses_predictor
        return Deployment(policy=self.spec.label, kind=self.spec.kind, value=self.spec.value, rule=rule, dist=dist,
                          predictor=DEPLOYED_PREDICTOR if uses_predictor else None, signal=self.signal,
                          planning_seconds=planning if uses_predictor else 0.0, **fields)


def _fit(holdout: CSProfile, rule_name: str, time_zero: bool, signal: str, predictor_epochs: int,
         seed: int) -> tuple[AnswerRule, NativePredictor, Any]:
    """Fit a rule (ensemble weights, time-zero answer) and its predictor (reading `signal`) on `holdout`."""
    from ..predictor import fit_ensemble_weights, fit_predictor

    weights = fit_ensemble_weights(holdout, seed=seed) if rule_name == "ensemble" else None
    prior = time_zero_answer(holdout.labels) if time_zero else (None, 0.0)
    rule = AnswerRule(rule_name, weights, *prior)
    model, _ = fit_predictor(holdout, "correctness", epochs=predictor_epochs, seed=seed, progress=False, rule=rule,
                             signal=signal)
    return rule, model.to_native(), model


def select(et: ETProfile, holdout: CSProfile, kinds: Sequence[str] = ("uniform", "normal"), scale: float = 1.0,
           rules: Sequence[str] = RULES, time_zero: Sequence[bool] = (False, True),
           predictor_epochs: int = 40, seed: int = 0, progress: bool = True,
           signals: Sequence[str] = ("confidence",), planning: float | None = None,
           policies: Sequence[str] | None = None) -> tuple[Deployment, Any]:
    """Choose (policy, rule, time-zero answer) on the held-out split; returns the deployment,
    refitted on the whole split, and the torch predictor fitted for its rule (saved with the
    deployment only when its policy needs it).

    The score of a candidate is its exact accuracy on the second half, averaged over `kinds`.
    `signals`: what EINet's predictor may read per observed exit (einet.signals; rules latest and
    best only: under ensemble it reads the ensemble's confidence). `planning`: the seconds EINet's
    re-planning adds per branch run (None: timed here, see the module's docstring)."""
    from tqdm.auto import tqdm

    from ..distributions import full_inference_time, relative_distribution
    from .simulate import evaluate, planning_seconds

    _check_options(holdout, kinds, rules, time_zero, planning, policies)
    if "ensemble" in rules and not holdout.has_log_probs:
        rules = [r for r in rules if r != "ensemble"]  # format-1 profiles: no log-probabilities to ensemble
    order = np.random.default_rng(seed).permutation(holdout.num_samples)
    fit_half, score_half = holdout.subset(order[: holdout.num_samples // 2]), holdout.subset(
        order[holdout.num_samples // 2:])
    dists = {kind: relative_distribution(kind, full_inference_time(et), scale) for kind in kinds}
    if not holdout.has_log_probs:
        signals = ["confidence"]
    specs = [spec for spec in STANDARD_POLICIES if spec.deployable and (policies is None or spec.kind in policies)]
    scores: dict[Candidate, list[float]] = {}
    settings = [(r, t, g) for r in rules for t in time_zero for g in signals
                if g == "confidence" or r != "ensemble"]
    for rule_name, zero, signal in tqdm(settings, desc="selecting", disable=not progress, leave=False):
        rule, native, _ = _fit(fit_half, rule_name, zero, signal, predictor_epochs, seed)
        memo: dict[tuple[int, ...], float] = {}  # the fitted half's accuracies of exit sets, for every plan
        for kind, dist in dists.items():
            if planning is None:  # timed once per call, on the EINet that re-plans after every branch
                planning = planning_seconds(EINet(native, et, dist, rule, name="EINet (paper)", signal=signal),
                                            score_half, et, rule)
            for spec in specs:  # only EINet reads the signal: the other policies are scored under confidence
                if signal == "confidence" or spec.uses_predictor:
                    candidate = Candidate(spec, rule_name, zero, signal)
                    scored = candidate.deployment(rule, kind, planning)
                    policy = deployed_policy(scored, et, dist, native, fit_half, memo)
                    result = evaluate(policy, score_half, planned_profile(scored, et), dist, draws=1, rule=rule)
                    scores.setdefault(candidate, []).append(result.expected)
    means = {candidate: float(np.mean(values)) for candidate, values in scores.items()}
    if not means:
        raise EinetValueError(f"no candidate left to select: policies {list(policies or [])}, rules {list(rules)} and "
                              f"signals {list(signals)} exclude each other (signals other than confidence are read by "
                              "EINet only, under rules latest and best)")
    best = max(means, key=lambda candidate: means[candidate])
    rule, native, model = _fit(holdout, best.rule, best.time_zero, best.signal, predictor_epochs, seed)
    # the winner, refitted on the whole held-out split, its plans made for the first distribution kind asked for
    validation = {candidate.label: value for candidate, value in sorted(means.items(), key=lambda kv: -kv[1])}
    deployment = best.deployment(rule, kinds[0], planning if planning is not None else 0.0, scale=scale,
                                 validation=validation, **_stored_plans(best.spec, et, dists[kinds[0]], holdout, rule))
    return deployment, model


def _check_options(holdout: CSProfile, kinds: Sequence[str], rules: Sequence[str], time_zero: Sequence[bool],
                   planning: float | None, policies: Sequence[str] | None) -> None:
    """Selection's options, refused (ValueError) before anything is fitted."""
    if policies is not None and (not policies or not set(policies) <= set(DEPLOYABLE_KINDS)):
        raise EinetValueError(f"policies must be deployable kinds ({', '.join(DEPLOYABLE_KINDS)}), got "
                              f"{list(policies)}")
    if holdout.meta.get("split") == "test":
        raise EinetValueError("refusing to select on a test-split CS-profile: selection uses held-out data only")
    if not rules or not time_zero or not kinds:
        raise EinetValueError("need at least one rule, one time-zero setting and one distribution kind")
    if planning is not None and not (math.isfinite(planning) and planning >= 0):
        raise EinetValueError(f"planning must be a finite number >= 0 of seconds per branch, got {planning}")


def _stored_plans(spec: PolicySpec, et: ETProfile, dist: Distribution, holdout: CSProfile,
                  rule: AnswerRule) -> dict[str, Any]:
    """What a deployment stores of its policy, for a runtime without the held-out split: a fixed plan's
    mask, EINet's first plan (the statistics plan), a threshold."""
    if spec.kind == "dynamic":
        return {"threshold": spec.value}
    if spec.kind == "einet":
        return {"first_plan": tuple(bool(b) for b in statistics_plan(holdout, et, dist, rule).mask)}
    if spec.uses_predictor:
        return {}
    policy = build_policy(spec, et, dist, rule, holdout=holdout)
    assert isinstance(policy, FixedPlan)
    return {"mask": tuple(bool(b) for b in policy.mask)}


def held_out_score(deployment: Deployment) -> float:
    """How a deployment scored on held-out data: its best candidate's score, the one it deploys.
    Networks are compared on it (:func:`select_network`)."""
    if not deployment.validation:
        raise EinetValueError(f"the deployment of {deployment.policy!r} holds no held-out scores")
    return max(deployment.validation.values())


def select_network(candidates: Mapping[str, tuple[ETProfile, CSProfile]], kinds: Sequence[str] = ("uniform", "normal"),
                   horizon: float | None = None, **options: Any) -> tuple[Deployment, Any]:
    """Choose the network too: `candidates` maps a name to a network's (ET-profile, held-out
    CS-profile), the same held-out images for all. Each is selected (:func:`select`, `options`
    passed on) under the same exit-time distributions in seconds, over `horizon` seconds (default:
    the first candidate's full inference: a deadline does not stretch because a network is
    faster); the network whose best configuration scored highest on held-out data is deployed,
    named in ``network``, with every network's candidates in ``validation`` ("name | candidate")."""
    from ..distributions import full_inference_time

    if not candidates:
        raise EinetValueError("need at least one candidate network")
    if "scale" in options:
        raise EinetTypeError("select_network takes `horizon` in seconds, not a scale per network")
    first_et, first_holdout = next(iter(candidates.values()))
    for name, (_, holdout) in candidates.items():
        if not np.array_equal(holdout.labels, first_holdout.labels):
            raise EinetValueError(f"network {name!r} was profiled on other held-out images than "
                                  f"{next(iter(candidates))!r}"
                                  ": candidates must share the held-out split")
    horizon = full_inference_time(first_et) if horizon is None else horizon
    if not (math.isfinite(horizon) and horizon > 0):
        raise EinetValueError(f"horizon must be a finite number of seconds > 0, got {horizon}")
    chosen: tuple[float, Deployment, Any] | None = None
    validation: dict[str, float] = {}
    for name, (et, holdout) in candidates.items():
        deployment, model = select(et, holdout, kinds, scale=horizon / full_inference_time(et), **options)
        validation |= {f"{name} | {candidate}": value for candidate, value in deployment.validation.items()}
        best = held_out_score(deployment)
        if chosen is None or best > chosen[0]:
            chosen = (best, replace(deployment, network=name), model)
    assert chosen is not None
    ranked = dict(sorted(validation.items(), key=lambda kv: -kv[1]))
    return replace(chosen[1], validation=ranked), chosen[2]


def save_deployment(path: str | os.PathLike[str], deployment: Deployment, predictor: Any = None) -> Path:
    """Write the deployment (its format: :mod:`einet.formats.deployment`) and, beside it, the predictor it
    needs; a deployment that cannot be read back is never written."""
    from ..predictor import save_predictor

    path = Path(path)
    record = checked_record(deployment, path.parent)  # before anything is written
    if deployment.predictor is not None:  # only policies that plan per sample need it
        if predictor is None:
            raise EinetValueError(f"the deployment of {deployment.policy!r} needs its predictor to be saved with it")
        if (path.parent / deployment.predictor).resolve() == path.resolve():
            raise EinetValueError(f"{path} is also the name of its predictor: name the deployment file otherwise")
        save_predictor(path.parent / deployment.predictor, predictor)
    write_deployment(path, record)
    return path
