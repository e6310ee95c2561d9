"""The policy protocol: the base class runs every branch and never stops early."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .registry import PolicySpec



class Policy:
    """Base class: run every branch, never stop early (the multi-exit network without skipping)."""

    name = "all exits"
    needs_oracle = False
    needs_log_probs = False
    spec: PolicySpec | None = None  # what it was built from (PolicySpec.build), for deployments

    def begin(self, oracle: np.ndarray | None = None) -> None:
        """A new sample starts."""

    def record_log_probs(self, block: int, log_probs: np.ndarray) -> None:
        """The log-probabilities of the branch that just ran (only for policies with `needs_log_probs`)."""

    def run_branch(self, block: int, elapsed: float) -> bool:
        return True

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        return False
