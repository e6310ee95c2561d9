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

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from ..distributions import RELATIVE_KINDS
from ..errors import EinetTypeError, EinetValueError
from ..formats.profiles import CSProfile
from ..planner import Distribution, ETProfile, NativePredictor
from ..policies import STANDARD_POLICIES, ConfidenceThreshold, EINet, FixedPlan, Policy, PolicySpec, standard_policies
from ..rules import RULES, AnswerRule, time_zero_answer

DEPLOYMENT_VERSION = 5  # 2 added `network`; 3 a SHA-256 of the record, verified on load; 4 the policy's kind;
# 5 the time-zero answer's fields named time_zero_class / time_zero_accuracy (before: prior_class / prior_accuracy)
READABLE_VERSIONS = (1, 2, 3, 4, 5)  # 1 and 2 (no checksum) still load, unverified; before 4 the kind is the label's
DEPLOYMENT_NAME = "deployment.json"  # what `einet demo --out-dir` writes
DEPLOYED_PREDICTOR = "predictor-deployed.npz"  # the predictor, beside the deployment file
MAX_DEPLOYMENT_BYTES = 16 * 1024**2
MAX_PLAN_EXITS = 100_000


@dataclass(frozen=True)
class Deployment:
    """A chosen configuration: what the runtime needs to rebuild the policy and hold answers."""

    policy: str  # the policy's name, as in the comparison tables
    rule: AnswerRule
    dist: str  # the exit-time distribution kind it was chosen for ("uniform" | "normal" | ...)
    scale: float = 1.0  # the distribution's horizon / full inference time
    predictor: str | None = None  # the predictor file (relative to the deployment file), for EINet
    mask: tuple[bool, ...] | None = None  # fixed plans
    threshold: float | None = None  # dynamic plans
    first_plan: tuple[bool, ...] | None = None  # "EINet": its first plan (the statistics plan)
    signal: str = "confidence"  # what EINet's predictor reads per observed exit
    planning_seconds: float = 0.0  # what EINet's planning was charged per branch when it was scored
    validation: dict[str, float] = field(default_factory=dict)  # candidate -> held-out exact accuracy
    network: str | None = None  # the chosen network's name, as given to select_network
    kind: str | None = None  # the policy's kind (einet.policies.POLICY_KINDS); None: the one labelled `policy`
    value: float | None = None  # its parameter (static: share of exits; dynamic: threshold)

    def __post_init__(self) -> None:
        if self.kind is None:  # files before version 4, and callers naming the policy by its label
            spec = PolicySpec("dynamic", self.threshold) if self.threshold is not None else spec_for_label(self.policy)
            object.__setattr__(self, "kind", spec.kind)
            object.__setattr__(self, "value", spec.value)
        self.spec  # noqa: B018 - checks kind and value

    @property
    def spec(self) -> PolicySpec:
        """The deployed policy by kind and parameter."""
        assert self.kind is not None
        return PolicySpec(self.kind, self.value)

    def build(self, et: ETProfile, dist: Distribution, predictor: NativePredictor | None = None) -> Policy:
        """The policy, planned for this ET-profile and exit-time distribution. For EINet pass the
        profile the runtime will see, its own planning included (:meth:`ElasticRuntime.calibrate`, or
        ``einet.evaluation.simulate.charged(et, self.planning_seconds)``), as it was scored."""
        from ..policies import HEDGE_MARGIN

        for name, plan in (("mask", self.mask), ("first_plan", self.first_plan)):
            if plan is not None and len(plan) != et.num_blocks:
                raise EinetValueError(f"the deployment's {name} has {len(plan)} exits but the ET-profile "
                                      f"{et.num_blocks} "
                                      "blocks: it was selected for another network")
        spec = self.spec
        policy: Policy
        if spec.uses_predictor:
            if predictor is None:
                raise EinetValueError(f"the deployed policy {self.policy!r} needs its predictor")
            if self.first_plan is not None:
                policy = EINet(predictor, et, dist, self.rule, first_plan=self.first_plan, margin=HEDGE_MARGIN,
                               name=spec.label, signal=self.signal)
            else:
                policy = EINet(predictor, et, dist, self.rule, name=spec.label, signal=self.signal)
        elif self.threshold is not None:
            policy = ConfidenceThreshold(self.threshold)
        elif self.mask is None:
            raise EinetValueError(f"the deployment of {self.policy!r} holds no plan")
        else:
            policy = FixedPlan(self.mask, spec.label)
        policy.spec = spec
        return policy


def spec_for_label(label: str) -> PolicySpec:
    """The standard policy a table label names (deployment files before version 4 stored only it)."""
    for spec in STANDARD_POLICIES:
        if spec.label == label:
            return spec
    raise EinetValueError(f"unknown policy {label!r}: expected one of {', '.join(s.label for s in STANDARD_POLICIES)}")


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
    from .simulate import charged, evaluate, planning_seconds

    deployable = sorted({spec.kind for spec in STANDARD_POLICIES if spec.deployable})
    if policies is not None and (not policies or not set(policies) <= set(deployable)):
        raise EinetValueError(f"policies must be deployable kinds ({', '.join(deployable)}), got {list(policies)}")
    if holdout.meta.get("split") == "test":
        raise EinetValueError("refusing to select on a test-split CS-profile: selection uses held-out data only")
    if not rules or not time_zero or not kinds:
        raise EinetValueError("need at least one rule, one time-zero setting and one distribution kind")
    if planning is not None and not (math.isfinite(planning) and planning >= 0):
        raise EinetValueError(f"planning must be a finite number >= 0 of seconds per branch, got {planning}")
    if "ensemble" in rules and not holdout.has_log_probs:
        rules = [r for r in rules if r != "ensemble"]  # format-1 profiles: no log-probabilities to ensemble
    order = np.random.default_rng(seed).permutation(holdout.num_samples)
    fit_half, score_half = holdout.subset(order[: holdout.num_samples // 2]), holdout.subset(
        order[holdout.num_samples // 2:])
    dists = {kind: relative_distribution(kind, full_inference_time(et), scale) for kind in kinds}
    if not holdout.has_log_probs:
        signals = ["confidence"]
    scores: dict[tuple[str, str, bool, str], list[float]] = {}
    settings = [(r, t, g) for r in rules for t in time_zero for g in signals
                if g == "confidence" or r != "ensemble"]
    for rule_name, zero, signal in tqdm(settings, desc="selecting", disable=not progress, leave=False):
        rule, native, _ = _fit(fit_half, rule_name, zero, signal, predictor_epochs, seed)
        for dist in dists.values():
            if planning is None:  # timed once per call, on the EINet that re-plans after every branch
                planning = planning_seconds(EINet(native, et, dist, rule, name="EINet (paper)", signal=signal),
                                            score_half, et, rule)
            planned_et = charged(et, planning)  # EINet, planned and scored paying for its own planning
            for policy in standard_policies(et, dist, native, fit_half, rule, signal, einet_et=planned_et):
                assert policy.spec is not None
                if not policy.spec.deployable or (signal != "confidence" and not policy.spec.uses_predictor) or (
                        policies is not None and policy.spec.kind not in policies):
                    continue  # only EINet reads the signal: the other policies were scored already
                profile = planned_et if isinstance(policy, EINet) else et
                result = evaluate(policy, score_half, profile, dist, draws=1, rule=rule)
                scores.setdefault((policy.name, rule_name, zero, signal), []).append(result.expected)
    means = {key: float(np.mean(values)) for key, values in scores.items()}
    if not means:
        raise EinetValueError(f"no candidate left to select: policies {list(policies or [])}, rules {list(rules)} and "
                              f"signals {list(signals)} exclude each other (signals other than confidence are read by "
                              "EINet only, under rules latest and best)")
    best_policy, best_rule, best_zero, best_signal = max(means, key=lambda key: means[key])
    rule, native, model = _fit(holdout, best_rule, best_zero, best_signal, predictor_epochs, seed)
    # the winner, rebuilt on the whole held-out split for the first distribution kind asked for
    built = {p.name: p for p in standard_policies(et, dists[kinds[0]], native, holdout, rule, best_signal)}
    chosen, statistics = built[best_policy], built["statistics"]
    spec = chosen.spec
    assert spec is not None
    uses_predictor = spec.uses_predictor
    deployment = Deployment(
        policy=best_policy, kind=spec.kind, value=spec.value, rule=rule, dist=kinds[0], scale=scale,
        predictor=DEPLOYED_PREDICTOR if uses_predictor else None,
        mask=tuple(bool(b) for b in chosen.mask) if isinstance(chosen, FixedPlan) else None,
        threshold=chosen.threshold if isinstance(chosen, ConfidenceThreshold) else None,
        first_plan=tuple(bool(b) for b in statistics.mask) if spec.kind == "einet" else None,  # type: ignore
        signal=best_signal, planning_seconds=planning if uses_predictor and planning is not None else 0.0,
        validation={f"{name} | {rule_name}{' + time-zero' if zero else ''}"
                    f"{'' if signal == 'confidence' else ' | ' + signal}": value
                    for (name, rule_name, zero, signal), value in sorted(means.items(), key=lambda kv: -kv[1])})
    return deployment, model


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
    """Write the deployment (JSON) and, beside it, the predictor it needs. The deployment is checked
    as :func:`load_deployment` checks it first, so a file that cannot be read back is never written."""
    from ..predictor import save_predictor

    path = Path(path)
    record = deployment_record(deployment)
    _checked(json.loads(json.dumps(record)), path.parent)
    if deployment.predictor is not None:  # only policies that plan per sample need it
        if predictor is None:
            raise EinetValueError(f"the deployment of {deployment.policy!r} needs its predictor to be saved with it")
        if (path.parent / deployment.predictor).resolve() == path.resolve():
            raise EinetValueError(f"{path} is also the name of its predictor: name the deployment file otherwise")
        save_predictor(path.parent / deployment.predictor, predictor)
    with atomic_write(path) as f:
        f.write(json.dumps(record, indent=2).encode() + b"\n")
    return path


def deployment_record(deployment: Deployment) -> dict[str, Any]:
    """A deployment as the JSON object its file (and a bundle) stores, with its checksum."""
    record = asdict(deployment) | {"rule": deployment.rule.record(), "format": "einet-deployment",
                                   "version": DEPLOYMENT_VERSION}
    record["sha256"] = _record_digest(record)
    return record


def deployment_from_record(record: object, folder: Path) -> Deployment:
    """A deployment from its JSON object, checked as :func:`load_deployment` checks a file's (its
    predictor a file in `folder`)."""
    return _checked(record, folder)


def load_deployment(path: str | os.PathLike[str]) -> Deployment:
    """Read a deployment file written by :func:`save_deployment`: every field typed and range-checked,
    the predictor inside the file's folder, no code run. ValueError names the file and the field."""
    from ..validation import open_regular, parse_json

    path = Path(path)
    try:
        with open_regular(path) as f:
            text = f.read(MAX_DEPLOYMENT_BYTES + 1)
        if len(text) > MAX_DEPLOYMENT_BYTES:
            raise EinetValueError(f"larger than {MAX_DEPLOYMENT_BYTES} bytes")
        return _checked(parse_json(text), path.parent)
    except FileNotFoundError:
        raise
    except (ValueError, TypeError) as error:
        raise EinetValueError(f"{path} is not a readable einet deployment: {error}") from None


def _record_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of a deployment record without its own checksum, in a canonical JSON form."""
    content = {key: value for key, value in record.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _checked(record: object, folder: Path) -> Deployment:
    """A deployment from its JSON record, every field checked (TypeError/ValueError name the field)."""
    from ..signals import SIGNALS
    from ..validation import number

    if not isinstance(record, dict):
        raise EinetTypeError("not a JSON object")
    version = record.get("version")
    if record.get("format") != "einet-deployment" or type(version) is not int or version not in READABLE_VERSIONS:
        raise EinetValueError(f"not an einet deployment of versions {READABLE_VERSIONS}")
    if version >= 3 and record.get("sha256") != _record_digest(record):  # a checksum covers every field
        raise EinetValueError("fails its SHA-256 checksum: the file is damaged or was edited")
    fields = {f.name for f in Deployment.__dataclass_fields__.values()}
    unknown = sorted(set(record) - fields - {"format", "version", "sha256"})
    if version < 4 and {"kind", "value"} & set(record):
        unknown = sorted({"kind", "value"} & set(record))
    if unknown:
        raise EinetValueError(f"unknown field {unknown[0]!r}")

    def text(name: str, optional: bool = True) -> str | None:
        value = record.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > 1000:
            raise EinetTypeError(f"{name} must be a non-empty string, got {value!r:.80}")
        return value

    def plan(name: str) -> tuple[bool, ...] | None:
        value = record.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_PLAN_EXITS \
                or not all(type(b) is bool for b in value):
            raise EinetTypeError(f"{name} must be a list of 1 to {MAX_PLAN_EXITS} booleans, got {value!r:.80}")
        return tuple(value)

    rule = AnswerRule.from_record(record.get("rule"))
    dist = text("dist", optional=False)
    if dist not in RELATIVE_KINDS:
        raise EinetValueError(f"dist must be one of {', '.join(RELATIVE_KINDS)}, got {dist!r}")
    predictor = text("predictor")
    if predictor is not None:
        inside = (folder / predictor).resolve()
        if Path(predictor).is_absolute() or folder.resolve() not in inside.parents:
            raise EinetValueError(f"predictor {predictor!r} must be a file in the deployment's folder")
    signal = record.get("signal", "confidence")
    if signal not in SIGNALS:
        raise EinetValueError(f"signal must be one of {', '.join(SIGNALS)}, got {signal!r}")
    validation = record.get("validation", {})
    if not isinstance(validation, dict):
        raise EinetTypeError(f"validation must be an object of held-out scores, got {validation!r:.80}")
    threshold = record.get("threshold")
    deployment = Deployment(
        policy=str(text("policy", optional=False)), rule=rule, dist=dist,
        scale=number("scale", record.get("scale", 1.0), 0.0, 1e9, low_open=True), predictor=predictor,
        mask=plan("mask"), threshold=None if threshold is None else number("threshold", threshold, 0.0, 1.0,
                                                                           low_open=True),
        first_plan=plan("first_plan"), signal=signal,
        planning_seconds=number("planning_seconds", record.get("planning_seconds", 0.0), 0.0, 1.0),
        validation={str(k): number(f"the held-out score of {k!r}", v, 0.0, 1.0) for k, v in validation.items()},
        network=text("network"), kind=text("kind"),
        value=None if record.get("value") is None else number("value", record["value"], 0.0, 1.0, low_open=True))
    if deployment.spec.uses_predictor:
        if predictor is None:
            raise EinetValueError(f"policy {deployment.policy!r} needs a predictor file")
    elif (deployment.mask is None) == (deployment.threshold is None):
        raise EinetValueError(f"policy {deployment.policy!r} needs exactly one of a mask and a threshold")
    return deployment


