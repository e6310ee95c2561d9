"""Which policies decide without Python between blocks, and how: one rule for the native loop
(:mod:`einet.runtime.native`) and the Python-free program (:mod:`einet.native_export`)."""

from __future__ import annotations

from .base import EveryExit, Policy
from .einet import EINet
from .fixed import FixedPlan

# How a policy decides, as the runtime asks it; a subclass overriding one of these decides in Python
DECISIONS = ("begin", "run_branch", "observe", "record_log_probs")


def _decides_as(policy: Policy, base: type[Policy]) -> bool:
    return isinstance(policy, base) and all(getattr(type(policy), name) is getattr(base, name) for name in DECISIONS)


def native_plan(policy: Policy, num_exits: int) -> list[int] | EINet | None:
    """A fixed plan's mask (every-exit's: all ones), or the EINet policy whose native session decides; None
    where the policy decides in Python: another kind, a subclass deciding otherwise, or EINet reading a
    signal other than its exits' (or the ensemble's) confidence."""
    if _decides_as(policy, FixedPlan):
        assert isinstance(policy, FixedPlan)
        return [int(run) for run in policy.mask]
    if _decides_as(policy, EveryExit):
        return [1] * num_exits
    if _decides_as(policy, EINet):
        assert isinstance(policy, EINet)
        return None if policy.needs_log_probs else policy
    return None
