"""The worker thread and the block-by-block loop, one :class:`Job` per sample."""

from __future__ import annotations

import _thread
import atexit
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Protocol

import torch

from ..errors import EinetValueError
from ..models.base import MultiExitNetwork
from ..policies import Policy
from ..rules import AnswerRule, RunningAnswer
from ._statistics import Statistics
from ._switch import lower_switch_interval, restore_switch_interval
from .adaptive import Adaptation

EXIT_JOIN_SECONDS = 60.0  # at interpreter exit, how long to wait for the workers' blocks in flight


class NonFiniteError(EinetValueError):
    """An exit's scores were not finite (NaN or inf values in the input, or a broken network): that
    sample gets no answer. Checked on every answer a branch gives, not on the input (which would cost
    before block 0): a non-finite input that does not reach the scores is not caught."""


class Job:
    """One sample's inference: what the caller hands the worker, and what the worker publishes back."""

    def __init__(self, x: torch.Tensor, policy: Policy, started: float) -> None:
        self.x, self.policy, self.started = x, policy, started
        self.queued = False  # handed over while the worker was still busy (with an interrupted sample)
        self.stopped = False  # the interrupt fired: the worker stops before the next block
        # Released by the worker when it is done with the job. A bare lock, not an Event: it is the
        # cheapest way for one thread to wake another in CPython (an Event's Condition makes a
        # new lock per wait and takes its own lock twice).
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.lock = _thread.allocate_lock()  # guards the error hand-over (fail / collect)
        # After every finished branch, in order: (finish time since the call, the exit that finished,
        # and the answer then held under the runtime's rule: its exit, prediction, confidence). Only
        # appended to, by the loop: read without a lock (see held()).
        self.answers: list[tuple[float, int, int | None, int | None, float]] = []
        self.planning = 0.0
        # (block, conv-part seconds, branch seconds or NaN when not run) as this sample ran them; the
        # conv part runs from the previous part's end to the block's end (a plan made after it, in
        # observe, included), the branch from there to its published answer (the policy's look-up of
        # whether to run it included), so they add up to when each answer came (einet.runtime.adaptive)
        self.times: list[tuple[int, float, float]] = []
        self.in_flight: tuple[int, bool, float] | None = None  # (block, its branch?, since when) as the worker runs it
        self.ended = math.inf  # when the worker was done with it, in seconds since the call
        self.error: BaseException | None = None
        self.returned = False  # the caller has gone: a later error is reported by the runtime

    def stop_requested(self) -> bool:
        """Whether the caller has stopped this job (its interrupt fired)."""
        return self.stopped

    def finish(self) -> None:
        """The worker is done with this job."""
        self._done.release()

    def wait(self, timeout: float | None) -> bool:
        """Wait until the worker is done with this job (True) or `timeout` seconds have passed (False)."""
        if self._done.acquire(timeout=-1 if timeout is None else timeout):
            self._done.release()  # done stays done
            return True
        return False

    def fail(self, error: BaseException) -> bool:
        """Hand `error` to the caller; False when the caller has already returned."""
        with self.lock:
            if self.returned:
                return False
            self.error = error
            return True

    def collect(self) -> BaseException | None:
        """The caller returns: from now on errors go to the runtime. The error raised so far, if any."""
        with self.lock:
            self.returned = True
            return self.error

    def held(self, cutoff: float) -> tuple[tuple[int | None, int | None, float] | None, tuple[int, ...]]:
        """The answer held at `cutoff` seconds (the one published last by then) and the exits run by then.
        No lock: the worker only appends, in time order (a list append is atomic), so the answers up to
        any length read are complete."""
        answers = self.answers
        count = len(answers)
        while count and answers[count - 1][0] > cutoff:
            count -= 1
        return (answers[count - 1][2:] if count else None), tuple([a[1] for a in answers[:count]])


class BlockLoop:
    """The block-by-block loop of one sample: after each conv part the policy decides on the branch;
    every finished branch's answer is published at once (through :class:`einet.rules.RunningAnswer`)
    and its confidence goes to the policy. Run by the worker thread, or in the caller's own thread
    by an inline runtime."""

    def __init__(self, model: MultiExitNetwork, device: torch.device, rule: AnswerRule,
                 statistics: Statistics) -> None:
        self.model, self.device, self.statistics = model, device, statistics
        # Asked once: between blocks even reading a device's type costs ~15 us (a cold torch call)
        self.on_cpu = device.type == "cpu"
        self.running = RunningAnswer(rule)  # the held answer, updated as branches finish
        self.clock: Callable[[], float] = time.perf_counter  # (tests: a replay's virtual clock)

    def run(self, job: Job, stopped: Callable[[], bool] | None, at: float = math.inf) -> bool:
        """Run `job` block by block until its last exit, its policy stops it, or it is stopped: by the
        perf_counter clock passing `at`, or by `stopped()` (None: never), both asked before every block
        (on the clock read when the previous part ended) and after every conv part. True when it was
        stopped so (an Event that is set and cleared again leaves no other trace)."""
        if self.clock() > at or (stopped is not None and stopped()):  # interrupted before its turn came
            return True
        job.policy.begin()
        self.running.reset()
        with torch.inference_mode():
            return self._blocks(job, stopped, at)

    def _blocks(self, job: Job, stopped: Callable[[], bool] | None, at: float) -> bool:
        """The loop of :meth:`run` over the blocks, the policy begun and the held answer reset."""
        clock, isfinite, started = self.clock, math.isfinite, job.started
        policy, running, answers = job.policy, self.running, job.answers
        observes = type(policy).observe is not Policy.observe  # (a fixed plan is told nothing: no time spent on it)
        needs_log_probs = policy.needs_log_probs
        times = job.times if self.on_cpu else None  # on CUDA a block's time shows only at a sync
        forward_block, forward_exit = self.model.forward_block, self.model.forward_exit
        # Every statement below runs between two blocks, with the caches cold from the block before: a
        # cheap one here costs ~1 us (benchmarks/test_bench_runtime.py); keep them few.
        h = job.x if self.on_cpu and job.x.is_cpu else job.x.to(self.device, non_blocking=True)
        pending = None  # the last branch's (block, confidence, finish time), not yet told to the policy
        mark = started + job.planning  # where the next conv part's time starts (after a plan made for it)
        if not job.queued:  # (a queued job's wait for the previous block would skew the calibration)
            self.statistics.dispatch.append(clock() - mark)  # the call to block 0, less a plan made for it
        for i in range(self.model.num_exits):
            if mark > at or (stopped is not None and stopped()):
                return True
            job.in_flight = (i, False, mark - started)
            h = forward_block(i, h)  # on CUDA only queued: the planning below overlaps it
            now = clock()
            if pending is not None:
                finish = policy.observe(*pending)
                after = clock()
                job.planning += after - now
                self.statistics.planning.append(after - now)
                now, pending = after, None
                if finish:
                    return False
            if now > at or (stopped is not None and stopped()):
                if times is not None:  # the block in flight's time: a replay of this sample needs it
                    times.append((i, now - mark, math.nan))
                return True
            # (the decision is a look-up, the plan having been made in observe: not timed apart)
            if not policy.run_branch(i, now - started):
                if times is not None:
                    times.append((i, now - mark, math.nan))
                mark = now
                continue
            job.in_flight = (i, True, now - started)
            log_probs = forward_exit(i, h).float().log_softmax(-1)[0].cpu().numpy()  # one sync
            if needs_log_probs:
                policy.record_log_probs(i, log_probs)
            signal = running.add(i, log_probs)
            if not isfinite(signal):  # NaN scores make a NaN answer: checked here, at no cost before block 0
                raise NonFiniteError(f"exit {i} answered with non-finite scores: the input (or the network) holds "
                                     "NaN or inf values, and no answer can be trusted")
            finished = clock()
            answers.append((finished - started, i, running.exit, running.prediction, running.confidence))
            if times is not None:
                times.append((i, now - mark, finished - now))
            mark = finished
            if observes:
                pending = (i, signal, finished - started)
        if pending is not None:  # the last block's branch: the policy still hears of it
            policy.observe(*pending)
        return False


class Stoppable(Protocol):
    """A worker thread, Python or native (einet.runtime.native.NativeDriver), as it is stopped at exit."""

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


WORKERS: weakref.WeakSet[Stoppable] = weakref.WeakSet()  # the live ones, stopped at exit


class Worker:
    """The worker thread: runs the jobs one at a time, block by block, publishing every finished
    branch's held answer (through :class:`einet.rules.RunningAnswer`) and telling the job's policy.

    It holds no reference to its runtime, so an unclosed runtime can be collected (which stops it).
    One long-lived thread: a fresh thread per sample would also build a fresh OpenMP team inside
    torch, costing more than a small model's whole inference."""

    def __init__(self, loop: BlockLoop, threads: int, adaptation: Adaptation | None = None,
                 lowers_switch_interval: bool = True, late_errors: deque[BaseException] | None = None) -> None:
        self.loop, self.threads = loop, threads
        self.adaptation = adaptation  # learnt from between samples, in this thread
        # Handed-over jobs (None: stop), and a bare lock released to wake the worker for them; both
        # safe to use from a finaliser (no Python-level lock is taken).
        self.jobs: deque[Job | None] = deque()
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        # Raised after their callers had returned (a deque shared with another worker of the runtime, if given)
        self.late_errors: deque[BaseException] = deque() if late_errors is None else late_errors
        self._lock = threading.RLock()  # re-entrant: the finaliser may run inside this thread
        self._pending = 0  # jobs handed over and not yet ended
        self.idle = threading.Event()  # set while no job is handed over or running
        self.idle.set()
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True, name="einet-runtime")
        self.lowers_switch_interval = lowers_switch_interval  # held lowered until stop() (see ._switch)
        if lowers_switch_interval:
            lower_switch_interval()
        WORKERS.add(self)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self.stopping:
                raise RuntimeError("this runtime is closed")
            job.queued = self._pending > 0
            self._pending += 1
            self.idle.clear()
            self.jobs.append(job)
            self._signal()

    def stop(self) -> None:
        """End the thread after the jobs handed over (each stopped at its block in flight); never blocks."""
        with self._lock:
            if self.stopping:
                return
            self.stopping = True
            self.jobs.append(None)
            self._signal()
        if self.lowers_switch_interval:
            restore_switch_interval()

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _signal(self) -> None:
        """Wake the worker (if it is waiting; a pending wake-up stays pending)."""
        with suppress(RuntimeError):  # already released: the worker has not taken the last wake-up yet
            self._wake.release()

    def _next(self) -> Job | None:
        while not self.jobs:
            self._wake.acquire()
        return self.jobs.popleft()

    def _serve(self) -> None:
        torch.set_num_threads(self.threads)
        while (job := self._next()) is not None:
            try:
                self.loop.run(job, job.stop_requested)
            except BaseException as error:  # to the caller, or to the runtime's next call if it has returned
                if not job.fail(error):
                    self.late_errors.append(error)
            finally:
                job.ended = time.perf_counter() - job.started
                job.finish()  # the caller has its answer; learning (below) is done before the device is idle
            with self._lock:
                last = self._pending == 1
            if last and self.adaptation is not None and self.adaptation.pending():
                try:
                    self.adaptation.update()
                except Exception as error:  # raised by the next infer()
                    self.late_errors.append(error)
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self.idle.set()


@atexit.register
def _stop_workers_at_exit() -> None:
    """Stop every live worker and wait for its block in flight, so that no thread is still inside
    torch while the interpreter shuts down (which can abort the process)."""
    workers = list(WORKERS)
    for worker in workers:
        worker.stop()
    end = time.monotonic() + EXIT_JOIN_SECONDS
    for worker in workers:
        worker.join(max(0.0, end - time.monotonic()))
