"""The native engine: a compiled network's blocks, its policy and its output rule run by C++ between two
Python calls (``native_loop.cpp``), without the GIL and without a Python statement between two blocks.

It keeps :class:`._worker.BlockLoop`'s contract (``run(job, stopped, at)``) and runs under the inline
driver: the caller's thread is inside C++ until the sample ends or its deadline passes (checked where the
Python loop checks it), and the answers come back when it returns. The threaded driver's caller reads the
held answer while the worker runs, which the native loop does not publish yet: a threaded runtime keeps
the Python loop. What it cannot run natively it hands to the Python loop, sample by sample: an Event or
callable interrupt (asked between parts from Python), a policy that is neither a fixed plan nor EINet
reading its exits' confidence.

Where it is built: the loop links libtorch, so it is compiled here, against the installed torch, by the
same compiler that compiles the blocks (``einet compile``), once per (source, torch, Python) into the
user's cache (``einet.data.cache_dir()/native``), and loaded from there after. With no compiler (or no
ninja) there is no native engine: the Python loop runs, said once in one line on the ``einet`` logger.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..models.compiled import CompiledNetwork
from ..policies import EINet, Policy
from ..policies.base import EveryExit
from ..policies.fixed import FixedPlan
from ..rules import AnswerRule
from ._statistics import Statistics
from ._worker import BlockLoop, Job

SOURCE = Path(__file__).with_name("native_loop.cpp")
LOG = logging.getLogger("einet")


def _include_dir() -> Path:
    """The planner's headers: installed with the package (a wheel), or in the source tree (a checkout)."""
    from .. import _core

    installed, checkout = Path(_core.__file__).parent, Path(__file__).resolve().parents[3] / "csrc"
    for candidate in (installed / "include", checkout / "include"):
        if (candidate / "einet" / "online.hpp").is_file():
            return candidate
    raise FileNotFoundError("einet's planner headers (einet/include) are not installed with this package")


def _key(include: Path) -> str:
    """What the built module depends on: its source, the planner's headers, torch and Python."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    for header in sorted((include / "einet").glob("*.hpp")):
        digest.update(header.read_bytes())
    digest.update(f"{torch.__version__} {sys.version_info[:2]} {sys.platform}".encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def native_module() -> ModuleType | None:
    """The native loop's module, built on first use into the user's cache (tens of seconds, once); None, said
    once, where it cannot be built here."""
    from torch.utils.cpp_extension import load

    from ..data.folder import cache_dir

    try:
        include = _include_dir()
        key = _key(include)
        folder = cache_dir() / "native" / key
        folder.mkdir(parents=True, exist_ok=True)
        module: ModuleType = load(f"einet_native_loop_{key}", [str(SOURCE)], extra_include_paths=[str(include)],
                                  extra_cflags=["-O2", "-ffp-contract=off"], build_directory=str(folder), verbose=False)
        return module
    except Exception as error:  # no compiler, no ninja, no headers: the Python loop runs
        LOG.warning("einet: no native engine here (%s); the Python loop runs the blocks",
                    " ".join(str(error).split())[:200])
        return None


def _native_policy(policy: Policy, num_exits: int) -> tuple[Any, int, int, int] | None:
    """The policy as the native loop takes it: (mask, session, lock, session size); None where it cannot."""
    if isinstance(policy, FixedPlan):
        return policy.mask.astype("uint8").tolist(), 0, 0, 0
    if type(policy) is EveryExit:
        return [1] * num_exits, 0, 0, 0
    if isinstance(policy, EINet) and not policy.needs_log_probs:  # reads each exit's (or the ensemble's) confidence
        return (None, *policy.session._native_handle())
    return None


class NativeEngine:
    """A compiled network run by the native loop, with the Python loop (`fallback`) for what it cannot run.
    `replay` (tests): each part's seconds, (conv, branch), instead of the clock: the loop's decisions on the
    same block times as a simulation's."""

    def __init__(self, network: CompiledNetwork, rule: AnswerRule, statistics: Statistics, module: ModuleType,
                 fallback: BlockLoop) -> None:
        self.model, self.device, self.on_cpu, self.statistics = network, torch.device("cpu"), True, statistics
        self.fallback = fallback
        self.replay: tuple[list[float], list[float]] | None = None
        self._policy: tuple[Policy, tuple[Any, int, int, int] | None] | None = None  # the last, as the loop takes it
        self._loop = module.NativeLoop([str(p) for p in network.block_packages],
                                       [str(p) for p in network.exit_packages], rule.name, list(rule.weights or ()),
                                       -1 if rule.time_zero_class is None else rule.time_zero_class)

    def runs_natively(self, policy: Policy) -> bool:
        """Whether a sample with `policy` runs in the native loop (else in the Python one)."""
        return self._as_native(policy) is not None

    def _as_native(self, policy: Policy) -> tuple[Any, int, int, int] | None:
        """:func:`_native_policy`, remembered for the policy of the last sample (asked before block 0 of each)."""
        if self._policy is None or self._policy[0] is not policy:
            self._policy = (policy, _native_policy(policy, self.model.num_exits))
        return self._policy[1]

    def run(self, job: Job, stopped: Any, at: float = math.inf) -> bool:
        """:meth:`BlockLoop.run`, natively where it can: True when the job was stopped (its deadline passed or
        its interrupt fired) before it ended."""
        policy = self._as_native(job.policy)
        if policy is None or stopped is not None or not job.x.is_cpu:
            return self.fallback.run(job, stopped, at)
        was_stopped, answers, times, in_flight, planning, dispatch, plans = self._loop.run(
            [job.x], job.started, job.planning, at, job.queued, *policy, self.replay)
        job.answers.extend(answers)
        job.times.extend(times)
        job.in_flight, job.planning = in_flight, planning
        if not math.isnan(dispatch):
            self.statistics.dispatch.append(dispatch)
        self.statistics.planning.extend(plans)
        return bool(was_stopped)
