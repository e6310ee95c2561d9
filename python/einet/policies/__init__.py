"""Exit policies: EINet and the baselines it is compared with (docs/design.md section 9, evaluation).

A policy decides, block by block, whether to run the exit branch, and may stop
the inference early. The same objects drive the trace-driven simulator
(:mod:`einet.evaluation.simulate`, fed with CS-profile confidences and ET-profile times)
and the real-time runtime (:mod:`einet.runtime`, fed with the live model), so
what is evaluated is what runs. The protocol:

- ``begin(oracle=None)`` before each sample (``oracle``: the sample's per-exit
  correctness, which only the clairvoyant ceiling may read);
- ``run_branch(block, elapsed)`` after block's conv part: run its branch?
- ``observe(block, confidence, elapsed)`` after a branch ran: True stops the inference
  (``confidence``: the held answer's under rule ``ensemble``, else the exit's own);
- policies with ``needs_log_probs`` are also given the exit's log-probabilities first,
  through ``record_log_probs(block, log_probs)``.

Numpy and the native planner only: no torch.
"""

from .base import EveryExit, Policy
from .einet import HEDGE_MARGIN, RANDOM_SEARCH_BUDGET, EINet
from .fixed import (
    ConfidenceThreshold,
    FixedPlan,
    ensemble_statistics_plan,
    single_exit,
    static_plan,
    statistics_plan,
)
from .kinds import DEPLOYABLE_KINDS, POLICY_KINDS, STANDARD_POLICIES, PolicySpec
from .oracles import Clairvoyant, NearestNeighbours
from .registry import build_policy, standard_policies

__all__ = [
    "DEPLOYABLE_KINDS",
    "HEDGE_MARGIN",
    "POLICY_KINDS",
    "RANDOM_SEARCH_BUDGET",
    "STANDARD_POLICIES",
    "Clairvoyant",
    "ConfidenceThreshold",
    "EINet",
    "EveryExit",
    "FixedPlan",
    "NearestNeighbours",
    "Policy",
    "PolicySpec",
    "build_policy",
    "ensemble_statistics_plan",
    "single_exit",
    "standard_policies",
    "static_plan",
    "statistics_plan",
]
