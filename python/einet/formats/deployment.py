"""The deployment format: a chosen configuration (policy by kind, rule, fitted plans, held-out scores)
as a JSON file, ``einet-deployment`` version 5, with a SHA-256 of its record; a bundle stores the
same record per device. Every field is checked on reading; no code runs. The choice itself is made
by :mod:`einet.evaluation.select`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_write
from ..distributions import RELATIVE_KINDS
from ..errors import EinetTypeError, EinetValueError
from ..policies.kinds import PolicySpec, spec_for_label
from ..rules import AnswerRule
from ..signals import SIGNALS
from ..validation import number, open_regular, parse_json

DEPLOYMENT_FORMAT = "einet-deployment"
DEPLOYMENT_VERSION = 5  # 5: the time-zero answer's fields named time_zero_class / time_zero_accuracy
DEPLOYMENT_NAME = "deployment.json"  # what `einet demo --out-dir` writes
DEPLOYED_PREDICTOR = "predictor-deployed.npz"  # the predictor, beside the deployment file
MAX_DEPLOYMENT_BYTES = 16 * 1024**2
MAX_PLAN_EXITS = 100_000
_ENVELOPE = ("format", "version", "sha256")  # a record's fields beside the deployment's own


@dataclass(frozen=True)
class Deployment:
    """A chosen configuration: what the runtime needs to rebuild the policy
    (:func:`einet.evaluation.select.deployed_policy`) and hold answers."""

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
        if self.kind is None:  # a caller naming the policy by its label
            spec = PolicySpec("dynamic", self.threshold) if self.threshold is not None else spec_for_label(self.policy)
            object.__setattr__(self, "kind", spec.kind)
            object.__setattr__(self, "value", spec.value)
        self.spec  # noqa: B018 - checks kind and value

    @property
    def spec(self) -> PolicySpec:
        """The deployed policy by kind and parameter."""
        assert self.kind is not None
        return PolicySpec(self.kind, self.value)

    @property
    def stored_plan(self) -> tuple[bool, ...] | None:
        """The statistics plan selection stored (the statistics policy's mask, EINet's first plan)."""
        return self.first_plan if self.kind == "einet" else self.mask


def deployment_record(deployment: Deployment) -> dict[str, Any]:
    """A deployment as the JSON object its file (and a bundle) stores, with its checksum."""
    record = asdict(deployment) | {"rule": deployment.rule.record(), "format": DEPLOYMENT_FORMAT,
                                   "version": DEPLOYMENT_VERSION}
    record["sha256"] = _record_digest(record)
    return record


def deployment_from_record(record: object, folder: Path) -> Deployment:
    """A deployment from its JSON object, checked as :func:`load_deployment` checks a file's (its
    predictor a file in `folder`)."""
    return _checked(record, folder)


def checked_record(deployment: Deployment, folder: Path) -> dict[str, Any]:
    """The deployment's record, checked as :func:`load_deployment` checks a file's (its predictor a file
    in `folder`): a file that cannot be read back is never written."""
    record = deployment_record(deployment)
    _checked(json.loads(json.dumps(record)), folder)
    return record


def write_deployment(path: Path, record: Mapping[str, Any]) -> None:
    """Write a deployment's file (not its predictor) from its :func:`checked_record`."""
    with atomic_write(path) as f:
        f.write(json.dumps(record, indent=2).encode() + b"\n")


def load_deployment(path: str | os.PathLike[str]) -> Deployment:
    """Read a deployment file (:func:`einet.evaluation.select.save_deployment`): every field typed and
    range-checked, the predictor inside the file's folder, no code run. ValueError names the file and the field."""
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


def _text(record: Mapping[str, Any], name: str, optional: bool = True) -> str | None:
    value = record.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise EinetTypeError(f"{name} must be a non-empty string, got {value!r:.80}")
    return value


def _plan(record: Mapping[str, Any], name: str) -> tuple[bool, ...] | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PLAN_EXITS or not all(type(b) is bool for b in value):
        raise EinetTypeError(f"{name} must be a list of 1 to {MAX_PLAN_EXITS} booleans, got {value!r:.80}")
    return tuple(value)


def _checked(record: object, folder: Path) -> Deployment:
    """A deployment from its JSON record, every field checked (TypeError/ValueError name the field)."""
    if not isinstance(record, dict):
        raise EinetTypeError("not a JSON object")
    if record.get("format") != DEPLOYMENT_FORMAT or type(record.get("version")) is not int:
        raise EinetValueError("not an einet deployment")
    if record["version"] != DEPLOYMENT_VERSION:
        raise EinetValueError(f"it is deployment version {record['version']}; this einet reads version "
                              f"{DEPLOYMENT_VERSION}")
    if record.get("sha256") != _record_digest(record):  # a checksum covers every field
        raise EinetValueError("fails its SHA-256 checksum: the file is damaged or was edited")
    unknown = sorted(set(record) - set(Deployment.__dataclass_fields__) - set(_ENVELOPE))
    if unknown:
        raise EinetValueError(f"unknown field {unknown[0]!r}")
    dist = _text(record, "dist", optional=False)
    if dist not in RELATIVE_KINDS:
        raise EinetValueError(f"dist must be one of {', '.join(RELATIVE_KINDS)}, got {dist!r}")
    predictor = _text(record, "predictor")
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
    threshold, value = record.get("threshold"), record.get("value")
    deployment = Deployment(
        policy=str(_text(record, "policy", optional=False)), rule=AnswerRule.from_record(record.get("rule")),
        dist=dist, scale=number("scale", record.get("scale", 1.0), 0.0, 1e9, low_open=True), predictor=predictor,
        mask=_plan(record, "mask"),
        threshold=None if threshold is None else number("threshold", threshold, 0.0, 1.0, low_open=True),
        first_plan=_plan(record, "first_plan"), signal=signal,
        planning_seconds=number("planning_seconds", record.get("planning_seconds", 0.0), 0.0, 1.0),
        validation={str(k): number(f"the held-out score of {k!r}", v, 0.0, 1.0) for k, v in validation.items()},
        network=_text(record, "network"), kind=_text(record, "kind", optional=False),
        value=None if value is None else number("value", value, 0.0, 1.0, low_open=True))
    if deployment.spec.uses_predictor:
        if predictor is None:
            raise EinetValueError(f"policy {deployment.policy!r} needs a predictor file")
    elif (deployment.mask is None) == (deployment.threshold is None):
        raise EinetValueError(f"policy {deployment.policy!r} needs exactly one of a mask and a threshold")
    return deployment
