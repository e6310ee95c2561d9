"""The policy protocol, and the simplest policy: every branch, never stopping early."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .kinds import PolicySpec


class Policy:
    """What a policy answers, sample by sample: whether to run each branch (:meth:`run_branch`), and
    whether to stop after one (:meth:`observe`). Subclasses name themselves (`name`, table labels)."""

    name: str
    needs_oracle = False
    needs_log_probs = False
    spec: PolicySpec | None = None  # what it was built from (registry.build_policy)

    def begin(self, oracle: np.ndarray | None = None) -> None:
        """A new sample starts."""

    def record_log_probs(self, block: int, log_probs: np.ndarray) -> None:
        """The log-probabilities of the branch that just ran (only for policies with `needs_log_probs`)."""

    def run_branch(self, block: int, elapsed: float) -> bool:
        """Whether to run `block`'s branch, `elapsed` seconds into the sample. Asked between blocks: keep
        it a look-up (plan in :meth:`observe`); the runtime counts its time as the branch's (or the next
        block's, when the branch is skipped), not as planning."""
        raise NotImplementedError

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        """A branch answered with `confidence`: True stops the inference here."""
        return False


class EveryExit(Policy):
    """Every branch, never stopping early: the multi-exit network without skipping."""

    name = "all exits"

    def run_branch(self, block: int, elapsed: float) -> bool:
        return True
