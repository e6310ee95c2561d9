"""The online elastic inference loop, under real interrupts (docs/design.md section 8, the online runtime).

A worker thread runs the model block by block. After each block's conv part
the policy decides whether to run its branch; every finished branch's answer
is published at once (rule ``latest``, ``best`` or ``ensemble``, see
:mod:`einet.rules`; before the first, the rule's time-zero answer, if any),
and its confidence goes to the policy, which re-plans (EINet: one native predict-and-search call) right
after the next block has been issued: the plan is only needed once that block
ends, so on CUDA the planning overlaps the queued kernels instead of idling the
GPU. (On a CPU a planner thread would overlap too, but handing work between
threads costs more than the ~10-40 us a re-planning step takes.) The caller
waits for the inference or a forced exit, whichever comes first: a deadline in
seconds, a ``threading.Event``, or a callable returning True. On a forced exit
the held answer comes back at once; the block in flight is not waited for (the
worker notices the stop when it ends, before the next block). Interrupts count
from the call: when the worker is still finishing the previous, interrupted
sample's block, the new sample waits behind it, and if its deadline passes
first it returns, interrupted, with what it holds by then (the time-zero
answer, or none).

On CUDA the blocks are queued asynchronously; the only synchronisation is
reading a finished branch's confidence, which the planner needs.

The pieces: :class:`_Interrupt` turns a deadline, Event or callable into one
waiting function; :class:`_Worker` owns the thread and the block-by-block loop
(one :class:`_Job` per sample); :class:`_Statistics` keeps what the runtime
adds to the model and folds it into an ET-profile (``calibrate``);
:class:`ElasticRuntime` ties them together behind ``infer``.
"""

from __future__ import annotations

import _thread
import atexit
import math
import numbers
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import torch

from .adaptive import Adaptation
from .models.base import MultiExitNetwork
from .planner import ETProfile
from .policies import Policy
from .rules import AnswerRule, RunningAnswer, as_rule

Interrupt = Union[float, threading.Event, Callable[[], bool], None]

POLL_SECONDS = 1e-4  # how often an Event or callable interrupt is asked
# A deadline is slept towards until this long before it, then polled every POLL_SECONDS: on a busy
# CPU a thread that has slept through a long timeout wakes later than one that keeps waking up
# (a p99 of ~4 ms against ~2 ms past the deadline, measured on 2 loaded cores).
FINAL_POLL_SECONDS = 2e-3
SWITCH_INTERVAL = 1e-4  # seconds a thread may hold the GIL while another waits
EXIT_JOIN_SECONDS = 60.0  # at interpreter exit, how long to wait for the workers' blocks in flight


class NonFiniteError(ValueError):
    """An exit's scores were not finite (NaN or inf values in the input, or a broken network): that
    sample gets no answer. Checked on every answer a branch gives, not on the input (which would cost
    before block 0): a non-finite input that does not reach the scores is not caught."""


@dataclass(frozen=True)
class Answer:
    """What an elastic inference returns: the held answer when it ended, and how it ended."""

    prediction: int | None  # class index; None when no branch had finished (and no time-zero answer)
    exit: int | None  # the latest finished exit when it was held (None: the time-zero answer, or none)
    confidence: float  # its max softmax probability (the ensemble's under rule ensemble; 0 when none)
    elapsed: float  # seconds from the call to the moment the answer was returned
    interrupted: bool  # True when a forced exit ended it
    exits_run: tuple[int, ...] = ()  # branches that finished before the end
    planning_seconds: float = 0.0  # time spent in the policy (predict + plan), included in elapsed
    # (block, conv-part seconds, branch seconds or NaN when not run) of each block, as the worker measured
    # them (CPU only: empty on CUDA). The worker's own list: after an interrupt, the block in flight is
    # added when it ends (runtime.wait_idle() waits for that)
    block_times: Sequence[tuple[int, float, float]] = field(default=(), compare=False)


# Python's thread switch interval: a waiting caller needs the GIL back within its latency budget, not
# Python's default 5 ms. It is process-wide, so it is lowered while any runtime is open and given back
# when the last one closes (unless someone else has set it meanwhile), counted under a lock.
_switch_lock = threading.RLock()  # re-entrant: a finaliser may run inside the holder's thread
_switch_users = 0  # runtimes open
_switch_saved: float | None = None  # the interval before the first of them lowered it
_switch_set: float | None = None  # what it was lowered to


def _lower_switch_interval() -> None:
    global _switch_users, _switch_saved, _switch_set
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL))
            _switch_set = sys.getswitchinterval()
        _switch_users += 1


def _restore_switch_interval() -> None:
    global _switch_users, _switch_saved, _switch_set
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0:
            if _switch_saved is not None and sys.getswitchinterval() == _switch_set:
                sys.setswitchinterval(_switch_saved)
            _switch_saved = _switch_set = None


class _Interrupt:
    """An interrupt (deadline in seconds from the call, ``threading.Event``, callable or None),
    checked when made, as one waiting function: :meth:`wait`."""

    def __init__(self, interrupt: Interrupt, started: float) -> None:
        self.deadline: float | None = None  # seconds from the call; None: no deadline
        self._at = math.inf  # the deadline on the perf_counter clock
        self._check: Callable[[], bool] | None = None  # an Event's is_set, or the callable
        if interrupt is None:
            pass
        elif isinstance(interrupt, bool):  # a Real too, but surely a mistake
            raise TypeError("interrupt must be seconds, a threading.Event or a callable, got a bool")
        elif isinstance(interrupt, numbers.Real):  # int, float, numpy scalars, Fraction, ...
            try:
                seconds = float(interrupt)
            except OverflowError:  # an int too large for a float
                seconds = math.inf if interrupt > 0 else -math.inf
            if math.isnan(seconds):
                raise ValueError("the deadline is NaN: give seconds >= 0 (inf for none)")
            if seconds < 0:
                raise ValueError(f"the deadline is negative ({seconds} s): give seconds >= 0 (inf for none)")
            if seconds < threading.TIMEOUT_MAX:  # inf and beyond any timeout a thread can wait: none
                self.deadline = seconds
                self._at = started + seconds
        elif isinstance(interrupt, threading.Event):
            # Polled, like a callable: waiting on the Event itself, and so on its lock, which the
            # setting thread needs too, returned later on a loaded CPU (p90 ~3.6 ms against ~1.1 ms).
            self._check = interrupt.is_set
        elif callable(interrupt):
            self._check = interrupt
        else:
            raise TypeError(f"interrupt must be seconds, a threading.Event or a callable, "
                            f"got {type(interrupt).__name__}")

    def wait(self, block: Callable[[float | None], bool]) -> bool:
        """Wait with `block(timeout)` (None: no limit; True once what it waits for has happened)
        until it succeeds (True) or the interrupt fires first (False)."""
        if self._check is not None:
            while not block(POLL_SECONDS):
                if self._check():
                    return False
            return True
        if self.deadline is None:
            return block(None)
        while True:
            left = self._at - time.perf_counter()
            if left <= 0.0:
                return block(0.0)  # what ended by the deadline wins
            if block(left - FINAL_POLL_SECONDS if left > FINAL_POLL_SECONDS else min(left, POLL_SECONDS)):
                return True

    def fired(self, ended: float) -> bool:
        """Whether the interrupt fired before an inference that ended `ended` seconds after the call:
        exact for a deadline; for an Event or callable, whether it has fired by the time the end is
        seen (on a busy CPU that can be a while later: a late caller reports the interruption)."""
        if self.deadline is not None:
            return ended > self.deadline
        return self._check is not None and bool(self._check())

    def cutoff(self, elapsed: float) -> float:
        """When interrupted `elapsed` seconds after the call: the last moment whose answers count
        (an answer finished after the deadline does not)."""
        return elapsed if self.deadline is None else min(elapsed, self.deadline)


class _Job:
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
        self.lock = _thread.allocate_lock()
        # After every finished branch, in order: (finish time since the call, the exit that finished,
        # and the answer then held under the runtime's rule: its exit, prediction, confidence).
        self.answers: list[tuple[float, int, int | None, int | None, float]] = []
        self.planning = 0.0
        # (block, conv-part seconds, branch seconds or NaN when not run) as this sample ran them; the
        # conv part runs from the previous block's end to the branch decision, the branch from there to
        # its published answer, so they add up to when each answer came (see einet.adaptive)
        self.times: list[tuple[int, float, float]] = []
        self.in_flight: tuple[int, bool, float] | None = None  # (block, its branch?, since when) as the worker runs it
        self.ended = math.inf  # when the worker was done with it, in seconds since the call
        self.error: BaseException | None = None
        self.returned = False  # the caller has gone: a later error is reported by the runtime

    def finish(self) -> None:
        """The worker is done with this job."""
        self._done.release()

    def wait(self, timeout: float | None) -> bool:
        """Wait until the worker is done with this job (True) or `timeout` seconds have passed (False)."""
        if self._done.acquire(timeout=-1 if timeout is None else timeout):
            self._done.release()  # done stays done
            return True
        return False

    def publish(self, finished: float, exit_index: int, running: RunningAnswer) -> None:
        with self.lock:
            self.answers.append((finished, exit_index, running.exit, running.prediction, running.confidence))

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
        """The answer held at `cutoff` seconds (the one published last by then) and the exits run by then."""
        with self.lock:
            finished = [a for a in self.answers if a[0] <= cutoff]
        return (finished[-1][2:] if finished else None), tuple(a[1] for a in finished)


class _Statistics:
    """What the runtime adds to the model, measured as it runs, and :meth:`calibrate` from it."""

    def __init__(self, size: int = 1000) -> None:
        self.dispatch: deque[float] = deque(maxlen=size)  # from infer() to the first block starting
        self.planning: deque[float] = deque(maxlen=size)  # policy time after each branch run
        self.answers: deque[list[tuple[float, int]]] = deque(maxlen=size)  # (finish time, exit) per sample

    def clear(self) -> None:
        for measured in (self.dispatch, self.planning, self.answers):
            measured.clear()

    def calibrate(self, et: ETProfile) -> ETProfile:
        """`et` plus what this runtime adds, as *means*: the held answer's accuracy at a uniform exit
        time is linear in when the branches finish, so their mean finishing times predict it; delays
        are skewed to the right, and medians would predict answers earlier than they come."""
        if not self.answers:
            raise ValueError("run some uninterrupted inferences first: there is nothing to calibrate from")
        dispatch = float(np.mean(list(self.dispatch)))
        planning_times = list(self.planning)
        planning = float(np.mean(planning_times)) if planning_times else 0.0
        # Whatever else each block costs here (Python between blocks, reading answers back): the
        # mean gap, per block, between when answers came and when `et` says they would.
        per_block = []
        for answers in list(self.answers):
            if not answers:
                continue
            finished, last = answers[-1]
            ran = [exit_index for _, exit_index in answers]
            predicted = dispatch + et.conv[:last + 1].sum() + et.branch[ran].sum() + planning * (len(ran) - 1)
            per_block.append((finished - predicted) / (last + 1))
        # Negative when `et` is slower than this runtime (a profile from a busier moment): the
        # correction goes both ways, or the simulator would keep predicting late answers.
        extra = float(np.mean(per_block)) if per_block else 0.0
        conv = np.maximum(et.conv + extra, 0.0)
        conv[0] += dispatch
        return ETProfile(conv, et.branch + planning)


_WORKERS: weakref.WeakSet[_Worker] = weakref.WeakSet()  # the live ones, stopped at exit


class _Worker:
    """The worker thread: runs the jobs one at a time, block by block, publishing every finished
    branch's held answer (through :class:`einet.rules.RunningAnswer`) and telling the job's policy.

    It holds no reference to its runtime, so an unclosed runtime can be collected (which stops it).
    One long-lived thread: a fresh thread per sample would also build a fresh OpenMP team inside
    torch, costing more than a small model's whole inference."""

    def __init__(self, model: MultiExitNetwork, device: torch.device, rule: AnswerRule, threads: int,
                 statistics: _Statistics, adaptation: Adaptation | None = None) -> None:
        self.model, self.device, self.threads, self.statistics = model, device, threads, statistics
        self.adaptation = adaptation  # learnt from between samples, in this thread
        self.running = RunningAnswer(rule)  # the held answer, updated as branches finish
        # Handed-over jobs (None: stop), and a bare lock released to wake the worker for them; both
        # safe to use from a finaliser (no Python-level lock is taken).
        self.jobs: deque[_Job | None] = deque()
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self.late_errors: deque[BaseException] = deque()  # raised after their callers had returned
        self._lock = threading.RLock()  # re-entrant: the finaliser may run inside this thread
        self._pending = 0  # jobs handed over and not yet ended
        self.idle = threading.Event()  # set while no job is handed over or running
        self.idle.set()
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True, name="einet-runtime")
        _lower_switch_interval()
        _WORKERS.add(self)
        self.thread.start()

    def submit(self, job: _Job) -> None:
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
        _restore_switch_interval()

    def join(self, timeout: float | None = None) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def _signal(self) -> None:
        """Wake the worker (if it is waiting; a pending wake-up stays pending)."""
        with suppress(RuntimeError):  # already released: the worker has not taken the last wake-up yet
            self._wake.release()

    def _next(self) -> _Job | None:
        while not self.jobs:
            self._wake.acquire()
        return self.jobs.popleft()

    def _serve(self) -> None:
        torch.set_num_threads(self.threads)
        while (job := self._next()) is not None:
            try:
                self._run(job)
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

    def _run(self, job: _Job) -> None:
        if job.stopped:  # interrupted before its turn came
            return
        policy, started = job.policy, job.started
        policy.begin()
        if not job.queued:  # (a queued job's wait for the previous block would skew the calibration)
            self.statistics.dispatch.append(time.perf_counter() - started - job.planning)
        running = self.running
        running.reset()
        times = job.times if self.device.type == "cpu" else None  # on CUDA a block's time shows only at a sync
        clock, forward_block, forward_exit = time.perf_counter, self.model.forward_block, self.model.forward_exit
        with torch.inference_mode():
            h = job.x.to(self.device, non_blocking=True)
            pending = None  # the last branch's (block, confidence, finish time), not yet told to the policy
            mark = started + job.planning  # where the next conv part's time starts (after a plan made for it)
            for i in range(self.model.num_exits):
                if job.stopped:
                    return
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
                        return
                if job.stopped:
                    if times is not None:  # the block in flight's time: a replay of this sample needs it
                        times.append((i, now - mark, math.nan))
                    return
                run = policy.run_branch(i, now - started)
                decided = clock()
                job.planning += decided - now
                if not run:
                    if times is not None:
                        times.append((i, decided - mark, math.nan))
                    mark = decided
                    continue
                job.in_flight = (i, True, decided - started)
                log_probs = forward_exit(i, h).float().log_softmax(-1)[0].cpu().numpy()  # one sync
                if policy.needs_log_probs:
                    policy.record_log_probs(i, log_probs)
                signal = running.add(i, log_probs)
                if not math.isfinite(signal):  # NaN scores make a NaN answer: checked here, at no cost before block 0
                    raise NonFiniteError(f"exit {i} answered with non-finite scores: the input (or the network) holds "
                                         "NaN or inf values, and no answer can be trusted")
                now = clock()
                finished = now - started
                job.publish(finished, i, running)
                if times is not None:
                    times.append((i, decided - mark, now - decided))
                mark = now
                pending = (i, signal, finished)
            if pending is not None:  # the last block's branch: the policy still hears of it
                policy.observe(*pending)


@atexit.register
def _stop_workers_at_exit() -> None:
    """Stop every live worker and wait for its block in flight, so that no thread is still inside
    torch while the interpreter shuts down (which can abort the process)."""
    workers = list(_WORKERS)
    for worker in workers:
        worker.stop()
    end = time.monotonic() + EXIT_JOIN_SECONDS
    for worker in workers:
        worker.join(max(0.0, end - time.monotonic()))


class ElasticRuntime:
    """Runs one sample at a time with `policy`, returning the best answer held when stopped.

    Thread safety: one runtime may be shared between threads. ``infer`` calls are serialised by a
    lock (one sample at a time); each call's interrupt counts from its own call, so a call still
    waiting for another thread's inference when its interrupt fires returns at once, interrupted,
    with the time-zero answer (or none). ``runtime.policy`` may be replaced between calls.

    Errors: an error in the worker (model or policy) is raised by the ``infer`` call it belongs
    to. When it happens after that call has returned (the block in flight of an interrupted
    sample), it is raised by the next ``infer`` or by ``close`` instead, never dropped; the
    runtime stays usable.

    Closing: ``close()`` (or ``with``) stops the worker after its block in flight, waits for it
    and gives back Python's thread switch interval (lowered while any runtime is open). An
    unclosed runtime's worker is a daemon thread that is stopped when the runtime is garbage
    collected, and at interpreter exit after its block in flight (up to ``EXIT_JOIN_SECONDS``).
    """

    def __init__(self, model: MultiExitNetwork, policy: Policy | None = None, rule: str | AnswerRule = "latest",
                 device: str = "cpu", threads: int = 1, adapt: Adaptation | None = None) -> None:
        rule = as_rule(rule)
        if (policy is None) == (adapt is None):
            raise TypeError("give a policy, or an Adaptation (adapt=...) that plans one")
        self._adaptation = adapt
        policy = adapt.policy if adapt is not None else policy
        assert policy is not None
        if rule.weights is not None and len(rule.weights) != model.num_exits:
            raise ValueError(f"the ensemble has {len(rule.weights)} weights, the model {model.num_exits} exits")
        if policy.needs_oracle:
            raise ValueError(f"{policy.name} needs each sample's true correctness: it can only be simulated")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._policy = policy
        self.rule = rule
        # torch's intra-op threads for the worker. One by default: a batch of one gains little from more
        # on a small CPU, and a second core stays free for the caller; profile_et uses the same default.
        self.threads = threads
        # What the runtime adds to the model, measured as it runs (see calibrate()).
        self._statistics = _Statistics()
        self.dispatch_seconds = self._statistics.dispatch  # from infer() to the first block starting
        self.planning_seconds = self._statistics.planning  # policy time after each branch run
        self._lock = threading.Lock()  # one inference at a time
        self.last_policy: Policy = policy  # the policy of the latest infer() call
        self._worker = _Worker(self.model, self.device, rule, threads, self._statistics, adapt)
        self._stop = weakref.finalize(self, self._worker.stop)  # also when collected unclosed

    @property
    def policy(self) -> Policy:
        """The policy the next sample runs with (an adaptive runtime's: planned with its estimates)."""
        return self._adaptation.policy if self._adaptation is not None else self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        if self._adaptation is not None:
            self._adaptation.policy = policy
        else:
            self._policy = policy

    @property
    def adaptation(self) -> Adaptation | None:
        """What an adaptive runtime has learnt (its ``profile`` and ``dist`` are planned with); None
        for a static one."""
        return self._adaptation

    def infer(self, x: torch.Tensor, interrupt: Interrupt = None, plan_for_deadline: bool = False) -> Answer:
        """Elastic inference of one sample (batch of one) until it ends or `interrupt` fires.

        `interrupt`: None (run to the end); a deadline in seconds from this call (any real number
        >= 0, numpy scalars included; inf or one beyond any possible wait means none); a
        ``threading.Event``; or a callable returning True to stop. A NaN or negative deadline
        raises ValueError, a bool or anything else TypeError, before anything runs.
        `plan_for_deadline` (adaptive runtimes): the caller knows the deadline, and this sample is
        planned for exactly it (the current block-time estimate, exit at the deadline).

        ``interrupted`` is True whenever the inference had not ended when the interrupt fired:
        for a deadline, by the worker's clock, even when this caller got the CPU back late; for an
        Event or callable, when it has fired by the time the end is seen (the callable is asked
        once more then)."""
        started = time.perf_counter()
        limit = _Interrupt(interrupt, started)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the input must be a tensor, got {type(x).__name__}")
        if self._worker.stopping:
            raise RuntimeError("this runtime is closed")
        policy, planned = self.policy, 0.0
        if plan_for_deadline:
            if self._adaptation is None or limit.deadline is None:
                raise ValueError("plan_for_deadline needs an adaptive runtime and a deadline in seconds")
            policy = self._adaptation.for_deadline(limit.deadline)
            planned = time.perf_counter() - started  # not block 0's time: the worker starts its clock after it
        self.last_policy = policy
        if not limit.wait(self._acquire):  # another thread's inference held the runtime until the interrupt
            return Answer(self.rule.prior_class, None, 0.0, time.perf_counter() - started, True)
        try:
            self._raise_late_error()
            job = _Job(x, policy, started)
            job.planning = planned
            self._worker.submit(job)
            try:
                finished = limit.wait(job.wait)
            except BaseException:  # the callable interrupt failed, or the caller was interrupted itself
                job.stopped = True
                job.collect()
                raise
            elapsed = time.perf_counter() - started
            if finished and limit.fired(job.ended):
                finished = False  # it ended after the interrupt, and only a late caller saw it end
            if not finished:
                job.stopped = True
            error = job.collect()
            if error is not None:
                raise error
            if finished and not job.queued:
                self._statistics.answers.append([(a[0], a[1]) for a in job.answers])
            if self._adaptation is not None:  # a queued sample's first block waited: its times mislead
                # The blocks that had ended by now; not the block in flight at an interrupt, which ends while
                # the caller runs again (measured: learning from it made an idle device look 1.8x slower)
                end = job.ended if finished else limit.cutoff(elapsed)
                running_part = job.in_flight if not finished and not job.queued and self.device.type == "cpu" else None
                self._adaptation.record([] if job.queued else list(job.times), end, not finished,
                                        None if running_part is None else (running_part[0], running_part[1],
                                                                           end - running_part[2]))
            held, exits_run = job.held(elapsed if finished else limit.cutoff(elapsed))
        finally:
            self._lock.release()
        elapsed = time.perf_counter() - started
        if held is None:  # no branch finished: the time-zero answer, if the rule holds one
            return Answer(self.rule.prior_class, None, 0.0, elapsed, not finished, exits_run, job.planning,
                          job.times)
        exit_index, prediction, confidence = held
        return Answer(prediction, exit_index, confidence, elapsed, not finished, exits_run, job.planning, job.times)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the block an interrupted inference left in flight has ended (True), or
        `timeout` seconds (False). A sample that should start on an idle device waits here first:
        otherwise its deadline, which counts from the call, also covers that block."""
        return self._worker.idle.wait(timeout)

    def _acquire(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)

    def _raise_late_error(self) -> None:
        """Raise the first error of an inference whose caller had already returned, if any."""
        if self._worker.late_errors:  # (only this thread takes from it)
            raise self._worker.late_errors.popleft()

    def calibrate(self, et: ETProfile) -> ETProfile:
        """`et` with what this runtime adds, as measured over its recent uninterrupted inferences:
        the hand-over from infer() to the worker (added to block 0), the policy's time after each
        branch (added to every branch) and any remaining per-block cost (added to every block).
        Plan and simulate with it to predict this runtime."""
        return self._statistics.calibrate(et)

    @property
    def profile(self) -> ETProfile | None:
        """The block times an adaptive runtime plans with now: its calibration, continuous (every part as
        measured in this runtime, overheads included, see einet.adaptive). None for a static runtime,
        whose profile is the one its policy was made with (see :meth:`calibrate`)."""
        return None if self._adaptation is None else self._adaptation.profile

    def reset_profile(self) -> None:
        """An adaptive runtime forgets what it learnt, block times and exit times: back to the offline
        profile and the prior (e.g. after moving to another device)."""
        if self._adaptation is None:
            raise ValueError("a static runtime learns nothing to reset: give it adapt=Adaptation(...)")
        with self._lock:  # no inference starts meanwhile, and none is learnt from (the worker learns before idle)
            self._worker.idle.wait()
            self._adaptation.reset()

    def reset_statistics(self) -> None:
        """Forget what the runtime measured so far (e.g. a cold start): :meth:`calibrate` then sees
        only the inferences that follow."""
        self._statistics.clear()

    def close(self) -> None:
        """Stop the worker after its block in flight, wait for it and give back Python's thread switch
        interval; then raise the error of an inference whose caller had already returned, if any."""
        with self._lock:
            self._stop()  # once: later calls do nothing
            self._worker.join()
            self._raise_late_error()

    def __enter__(self) -> ElasticRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
