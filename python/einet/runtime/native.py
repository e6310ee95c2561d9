"""The native engine: a compiled network's blocks, its policy and its output rule run by C++
(``einet/native/loop.hpp``, bound by ``native_loop.cpp``) without the GIL and without a Python statement
between two blocks.

It keeps :class:`._worker.BlockLoop`'s contract (``run(job, stopped, at)``) for the inline driver, whose
caller is inside C++ until the sample ends or its deadline passes; and it has its own worker thread, in C++,
for :class:`NativeDriver`: the caller hands the sample over and waits on it with the GIL released, until the
sample ends or the interrupt fires (a deadline, an Event or a callable, asked by the caller as the Python
worker's caller asks it), then returns the answer held at that instant while the part in flight runs on.
What it cannot run natively goes to the Python loop, sample by sample: a policy that is neither a fixed plan
nor EINet reading its exits' confidence; inline, also an Event or callable interrupt (asked between parts).

Where it is built: the loop links libtorch, so it is compiled here, against the installed torch, by the
same compiler that compiles the blocks (``einet compile``), once per (source, headers, torch, Python) into
the user's cache (``einet.data.cache_dir()/native``), and loaded from there after. With no compiler (or no
ninja) there is no native engine: the Python loop runs, said once in one line on the ``einet`` logger.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch

from ..models.compiled import CompiledNetwork
from ..policies import Policy
from ..policies.native import native_plan
from ..rules import AnswerRule
from ._drivers import ThreadedDriver
from ._interrupt import InterruptCheck
from ._statistics import Statistics
from ._worker import WORKERS, BlockLoop, Job, NonFiniteError
from .adaptive import Adaptation

SOURCE = Path(__file__).with_name("native_loop.cpp")
LOG = logging.getLogger("einet")


def _include_dir() -> Path:
    """The planner's and the loop's headers: in the source tree (a checkout, editable or not), or installed
    with the package (a wheel)."""
    from .. import _core

    checkout, installed = Path(__file__).resolve().parents[3] / "csrc", Path(_core.__file__).parent
    for candidate in (checkout / "include", installed / "include"):
        if (candidate / "einet" / "online.hpp").is_file():
            return candidate
    raise FileNotFoundError("einet's planner headers (einet/include) are not installed with this package")


def _key(include: Path) -> str:
    """What the built module depends on: its source, the planner's headers, torch and Python."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    for header in sorted((include / "einet").rglob("*.hpp")):
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
    """The policy as the native loop takes it: (mask, session, lock, session size); None where it cannot
    (:func:`einet.policies.native.native_plan`)."""
    plan = native_plan(policy, num_exits)
    if plan is None or isinstance(plan, list):
        return None if plan is None else (plan, 0, 0, 0)
    return (None, *plan.session._native_handle())


def _raise_if_failed(progress: Progress) -> None:
    """The error the loop published, as the Python loop raises it."""
    if progress.non_finite:
        raise NonFiniteError(progress.error)
    if progress.error:
        raise RuntimeError(f"the native loop failed: {progress.error}")


class Progress(NamedTuple):
    """A native job's progress, as ``native_loop.cpp`` hands it over (einet/native/loop.hpp, Progress)."""

    done: bool
    stopped: bool
    answers: list[tuple[float, int, int | None, int | None, float]]
    times: list[tuple[int, float, float]]
    in_flight: tuple[int, bool, float] | None
    planning: float
    dispatch: float
    plans: list[float]
    ended: float
    non_finite: bool
    error: str

    def into(self, job: Job) -> None:
        """Hand what the sample published so far to the Python `job` (the runtime reads that one)."""
        job.answers[:] = self.answers
        job.times[:] = self.times
        job.in_flight, job.planning, job.ended = self.in_flight, self.planning, self.ended

    def count_into(self, statistics: Statistics) -> None:
        """What the runtime added to the model in this sample (once the sample is done)."""
        if not math.isnan(self.dispatch):
            statistics.dispatch.append(self.dispatch)
        statistics.planning.extend(self.plans)


class NativeEngine:
    """A compiled network run by the native loop, with the Python loop (`fallback`) for what it cannot run.
    `replay` (tests, inline): each part's seconds, (conv, branch), instead of the clock: the loop's decisions
    on the same block times as a simulation's."""

    def __init__(self, network: CompiledNetwork, rule: AnswerRule, statistics: Statistics, module: ModuleType,
                 fallback: BlockLoop) -> None:
        self.model, self.device, self.on_cpu, self.statistics = network, torch.device("cpu"), True, statistics
        self.fallback = fallback
        self.replay: tuple[list[float], list[float]] | None = None
        self._policy: tuple[Policy, tuple[Any, int, int, int] | None] | None = None  # the last, as the loop takes it
        self.loop = module.NativeLoop([str(p) for p in network.block_packages],
                                      [str(p) for p in network.exit_packages], rule.name, list(rule.weights or ()),
                                      -1 if rule.time_zero_class is None else rule.time_zero_class)

    def runs_natively(self, policy: Policy) -> bool:
        """Whether a sample with `policy` runs in the native loop (else in the Python one)."""
        return self.as_native(policy) is not None

    def as_native(self, policy: Policy) -> tuple[Any, int, int, int] | None:
        """:func:`_native_policy`, remembered for the policy of the last sample (asked before block 0 of each)."""
        if self._policy is None or self._policy[0] is not policy:
            self._policy = (policy, _native_policy(policy, self.model.num_exits))
        return self._policy[1]

    def run(self, job: Job, stopped: Any, at: float = math.inf) -> bool:
        """:meth:`BlockLoop.run`, natively where it can: True when the job was stopped (its deadline passed or
        its interrupt fired) before it ended."""
        policy = self.as_native(job.policy)
        if policy is None or stopped is not None or not job.x.is_cpu:
            return self.fallback.run(job, stopped, at)
        progress = Progress(*self.loop.run([job.x], job.started, job.planning, at, job.queued, *policy, self.replay))
        progress.into(job)
        progress.count_into(self.statistics)
        _raise_if_failed(progress)
        return progress.stopped


class Learner:
    """The native driver's learner: a Python thread that learns from each sample once its caller has recorded
    it (:meth:`request`), beside the next sample's blocks; an error is raised by the next call. (The C++ worker
    never runs Python; learning there, between samples, would hold the next sample back, and a sample handed
    over meanwhile counts as queued and is not learnt from.)"""

    def __init__(self, adaptation: Adaptation, late_errors: deque[BaseException]) -> None:
        self._adaptation, self._late_errors = adaptation, late_errors
        self._wanted = threading.Condition()
        self._requested = self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="einet-learner")
        self._thread.start()

    def request(self) -> None:
        with self._wanted:
            self._requested = True
            self._wanted.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until nothing is requested or being learnt (True) or `timeout` seconds pass (False)."""
        with self._wanted:
            return self._wanted.wait_for(lambda: not (self._requested or self._busy), timeout)

    def stop(self) -> None:
        with self._wanted:
            self._stopping = True
            self._wanted.notify_all()

    def join(self, timeout: float | None) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            with self._wanted:
                self._wanted.wait_for(lambda: self._requested or self._stopping)
                if self._stopping:
                    return
                self._requested, self._busy = False, True
            try:
                if self._adaptation.pending():
                    self._adaptation.update()
            except Exception as error:
                self._late_errors.append(error)
            finally:
                with self._wanted:
                    self._busy = False
                    self._wanted.notify_all()


class NativeDriver:
    """The worker-driven mode of the native engine: the loop's C++ worker thread runs the samples without the
    GIL; the caller waits on its sample with the GIL released until it ends or the interrupt fires, and
    returns the answer held then. Samples the native loop cannot run go to a Python worker (made when first
    needed); the two never run at once (each waits for the other to be idle, within the sample's interrupt).
    """

    waits_for_part_in_flight = False

    def __init__(self, engine: NativeEngine, threads: int, adaptation: Adaptation | None,
                 python_driver: Callable[[deque[BaseException]], ThreadedDriver]) -> None:
        self.loop, self._late_errors = engine, deque[BaseException]()
        engine.loop.start_worker(threads)
        self._learner = None if adaptation is None else Learner(adaptation, self._late_errors)
        self._make_python_driver = python_driver
        self._python: ThreadedDriver | None = None
        # Samples handed to the C++ loop and not yet counted (the loop itself keeps what each one reads alive)
        self._running: list[tuple[Job, Any]] = []
        self._lock = threading.Lock()  # (wait_idle and completed() may harvest beside an infer() call)
        WORKERS.add(self)

    @property
    def late_errors(self) -> deque[BaseException]:
        """Errors of samples whose callers had returned: those the loop has finished since, counted first."""
        self._harvest()
        return self._late_errors

    def run(self, job: Job, limit: InterruptCheck) -> bool:
        policy = self.loop.as_native(job.policy)
        if policy is None or not job.x.is_cpu:  # what the native loop cannot run: the Python worker, once idle
            if not limit.wait(self._native_idle):
                return False
            if self._python is None:
                self._python = self._make_python_driver(self._late_errors)
            return self._python.run(job, limit)
        if self._python is not None and not limit.wait(self._python.wait_idle):
            return False
        if limit.poll is not None and limit.poll():  # fired already: nothing starts
            return False
        native_job = self.loop.loop.submit([job.x], job.started, job.planning, limit.at, *policy, job.policy)
        job.queued = native_job.queued
        with self._lock:
            self._running.append((job, native_job))
        try:  # a deadline: one sleep in C++ until it (an Event or callable: asked as the Python worker's caller asks)
            finished = native_job.wait_until(limit.at) if limit.poll is None else limit.wait(native_job.wait)
        except BaseException:  # the callable interrupt failed, or the caller was interrupted itself
            native_job.stop()
            job.stopped = True
            job.collect()
            raise
        native_job.stop()  # (nothing when it is done)
        progress = Progress(*native_job.progress())
        progress.into(job)
        self._harvest()  # (counts it, and hands its error to its caller, if it is done)
        return finished and not progress.stopped

    def _native_idle(self, timeout: float | None) -> bool:
        idle = bool(self.loop.loop.wait_idle(math.inf if timeout is None else timeout))
        if idle:
            self._harvest()
        return idle

    def _harvest(self) -> None:
        """Count the samples the loop is done with; each one's error goes to its caller, or, if it has returned,
        to the next call."""
        with self._lock:
            done = [(job, native_job) for job, native_job in self._running if native_job.progress()[0]]
            self._running = [pair for pair in self._running if pair not in done]
        for job, native_job in done:
            progress = Progress(*native_job.progress())
            progress.into(job)
            progress.count_into(self.loop.statistics)
            try:
                _raise_if_failed(progress)
            except Exception as error:
                if not job.fail(error):
                    self._late_errors.append(error)

    def after_answer(self) -> None:
        """The caller has made its answer and recorded what is learnt from it: learn, beside the next sample."""
        if self._learner is not None:
            self._learner.request()

    def wait_idle(self, timeout: float | None) -> bool:
        idle = self._native_idle(timeout) and (self._learner is None or self._learner.wait_idle(timeout))
        return idle and (self._python is None or self._python.wait_idle(timeout))

    def stop(self) -> None:
        self.loop.loop.stop()
        if self._learner is not None:
            self._learner.stop()
        if self._python is not None:
            self._python.stop()

    def join(self, timeout: float | None = None) -> None:
        self.loop.loop.join(math.inf if timeout is None else timeout)
        self._harvest()  # (an error of the last part in flight: raised by close())
        if self._learner is not None:
            self._learner.join(timeout)
        if self._python is not None:
            self._python.join(timeout)
