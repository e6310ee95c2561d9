"""The Python loop on replayed block times: each part of a network advances a virtual clock by the seconds
given for it, so that the loop's decisions at a deadline are those of a simulation with those times. What
the native engine's ``replay`` does in C++; the two compared show that they decide alike."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..models.base import MultiExitNetwork
from ..rules import AnswerRule
from ._statistics import Statistics
from ._worker import BlockLoop, Job


class ReplayedTimes:
    """`network`'s parts, each taking its replayed seconds (`conv[i]`, `branch[i]`) on :attr:`now`."""

    def __init__(self, network: MultiExitNetwork, conv: Sequence[float], branch: Sequence[float]) -> None:
        self.network, self.conv, self.branch = network, list(conv), list(branch)
        self.num_exits, self.now = network.num_exits, 0.0

    def forward_block(self, i: int, h: Any) -> Any:
        out = self.network.forward_block(i, h)
        self.now += self.conv[i]
        return out

    def forward_exit(self, i: int, h: Any) -> torch.Tensor:
        out = self.network.forward_exit(i, h)
        self.now += self.branch[i]
        return out


class ReplayedLoop:
    """The Python loop (:class:`._worker.BlockLoop`) over `network` on replayed times: each job's virtual clock
    starts where the job does (its ``started`` plus its ``planning``), as the native loop's replay does."""

    def __init__(self, network: MultiExitNetwork, rule: AnswerRule, conv: Sequence[float],
                 branch: Sequence[float]) -> None:
        self.times = ReplayedTimes(network, conv, branch)
        self.loop = BlockLoop(self.times, torch.device("cpu"), rule, Statistics())  # type: ignore[arg-type]
        self.loop.clock = self._now

    def _now(self) -> float:
        return self.times.now

    def run(self, job: Job, stopped: Callable[[], bool] | None, at: float = math.inf) -> bool:
        """:meth:`BlockLoop.run` of `job` until `at` (virtual seconds) or `stopped()`; True when it was stopped."""
        self.times.now = job.started + job.planning
        return self.loop.run(job, stopped, at)
