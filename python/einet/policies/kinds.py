"""Policies by kind and value, as deployments and bundles store them: the one table of kinds.

Names only, no planning: the file formats (:mod:`einet.formats.deployment`) read and check a policy
by kind here; :func:`einet.policies.registry.build_policy` turns one into a policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import EinetValueError

POLICY_KINDS = {"einet": "EINet", "einet-paper": "EINet (paper)", "einet-random": "EINet (random search)",
                "static": "static", "dynamic": "dynamic", "statistics": "statistics", "single-exit": "single-exit",
                "clairvoyant": "clairvoyant"}
_UNDEPLOYABLE = ("clairvoyant", "einet-random")  # an oracle, and a slower ablation of EINet
DEPLOYABLE_KINDS = tuple(kind for kind in POLICY_KINDS if kind not in _UNDEPLOYABLE)


@dataclass(frozen=True)
class PolicySpec:
    """A policy by kind and parameter. The table label is derived from it, never parsed (a renamed
    column breaks nothing)."""

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
        return self.kind in DEPLOYABLE_KINDS


# The paper's comparison, in table order: EINet first, the clairvoyant ceiling last.
STANDARD_POLICIES = (PolicySpec("einet"), PolicySpec("einet-paper"), PolicySpec("einet-random"),
                     PolicySpec("static", 0.25), PolicySpec("static", 0.5), PolicySpec("static", 1.0),
                     PolicySpec("dynamic", 0.90), PolicySpec("dynamic", 0.95), PolicySpec("dynamic", 0.99),
                     PolicySpec("statistics"), PolicySpec("single-exit"), PolicySpec("clairvoyant"))


def spec_for_label(label: str) -> PolicySpec:
    """The standard policy a table label names (for a deployment made by naming its policy's label)."""
    for spec in STANDARD_POLICIES:
        if spec.label == label:
            return spec
    raise EinetValueError(f"unknown policy {label!r}: expected one of {', '.join(s.label for s in STANDARD_POLICIES)}")
