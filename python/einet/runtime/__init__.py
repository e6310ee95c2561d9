"""The online elastic inference loop, under real interrupts (docs/design.md section 8, the online runtime).

One engine runs a sample block by block (:class:`._worker.BlockLoop`): after each block's conv part
the policy decides whether to run its branch; every finished branch's answer is published at once
(rule ``latest``, ``best`` or ``ensemble``, see :mod:`einet.rules`; before the first, the rule's
time-zero answer, if any), and its confidence goes to the policy, which re-plans (EINet: one native
predict-and-search call) right after the next block has been issued: the plan is only needed once that
block ends, so on CUDA the planning overlaps the queued kernels instead of idling the GPU.

A driver decides where the engine runs (:mod:`._drivers`), behind one contract:

- threaded (the default): a long-lived worker thread runs the blocks; the caller waits for the end or a
  forced exit, whichever comes first: a deadline in seconds, a ``threading.Event``, or a callable
  returning True. On a forced exit the held answer comes back at once; the block in flight is not
  waited for (the worker notices the stop when it ends, before the next block). Interrupts count from
  the call: when the worker is still finishing the previous, interrupted sample's block, the new sample
  waits behind it, and if its deadline passes first it returns, interrupted, with what it holds by then
  (the time-zero answer, or none). (On a CPU a planner thread would overlap the blocks too, but handing
  work between threads costs more than the ~10-40 us a re-planning step takes.)
- inline: the caller's own thread runs the blocks, asking the interrupt between parts; nothing is handed
  between threads, and the call returns once the part in flight has ended, with the answer held when
  the interrupt fired.

And an engine runs the blocks: the Python loop, or for a compiled network the native loop
(:mod:`einet.runtime.native`: blocks, policy and rule in C++, without the GIL), the default where it can be
built. Threaded, the native loop runs on its own C++ worker while the caller waits with the GIL released.

On CUDA the blocks are queued asynchronously; the only synchronisation is
reading a finished branch's confidence, which the planner needs. An :class:`Answer` is immutable;
:meth:`ElasticRuntime.completed` adds the time of the block that was in flight when it was returned.

The pieces: :mod:`._interrupt` turns a deadline, Event or callable into one waiting function;
:mod:`._worker` owns the Python engine (one job per sample) and its worker thread; :mod:`._drivers` the drivers;
:mod:`._statistics` keeps what the runtime adds to the model and folds it into an ET-profile
(``calibrate``); :mod:`._switch` lowers Python's thread switch interval while a threaded runtime is open;
:class:`ElasticRuntime`, here, ties them together behind ``infer``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import EinetTypeError, EinetValueError
from ..models.base import MultiExitNetwork
from ..planner import ETProfile
from ..policies import Policy
from ..rules import AnswerRule, as_rule
from ..validation import number
from ._drivers import ENGINES, INLINE_PART_SECONDS, Driver, check_engine, inline_by_default, make_driver
from ._interrupt import Interrupt, InterruptCheck
from ._statistics import Statistics
from ._switch import SWITCH_INTERVAL
from ._worker import EXIT_JOIN_SECONDS, BlockLoop, Job, NonFiniteError
from .adaptive import Adaptation
from .inputs import InputSpec

__all__ = ["ENGINES", "EXIT_JOIN_SECONDS", "INLINE_PART_SECONDS", "SWITCH_INTERVAL", "Answer", "ElasticRuntime",
           "InputSpec", "Interrupt", "NonFiniteError", "check_engine", "inline_by_default"]


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
    # (block, conv-part seconds, branch seconds or NaN when not run) of each block ended when the answer was
    # returned, as the loop measured them (CPU only: empty on CUDA). A threaded runtime's block in flight at
    # an interrupt ends later: runtime.completed(answer) gives the answer with its time too
    block_times: tuple[tuple[int, float, float], ...] = field(default=(), compare=False)


def _runnable(model: MultiExitNetwork, device: torch.device) -> MultiExitNetwork:
    """`model` when it is in eval mode on `device` already, else an eval copy there: a runtime must not
    change its caller's module (move it, or switch off its training mode) behind its back. A wrapper that
    only has the network's methods (einet.lab.stress.Slowed) is asked to move itself: it decides what that means."""
    if not isinstance(model, torch.nn.Module):
        return model.to(device).eval()
    tensors = itertools.chain(model.parameters(), model.buffers())
    on_device = all(t.device == device or (device.index is None and t.device.type == device.type) for t in tensors)
    if on_device and not any(module.training for module in model.modules()):
        return model
    return copy.deepcopy(model).to(device).eval()


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

    The model: the runtime runs ``model`` itself when it is already in eval mode on `device` (as a
    bundle's network is on the CPU), else its own eval copy on `device` (``runtime.model``): the
    caller's module is never moved or switched out of training mode (a wrapper that is no
    ``nn.Module`` is asked to move itself, with its ``to`` and ``eval``).

    Python's thread switch interval (process-wide): a threaded runtime lowers it to
    ``SWITCH_INTERVAL`` while it is open, so that the caller and the worker hand over quickly;
    counted across the runtimes open and given back when the last one closes (see
    :mod:`einet.runtime._switch`). ``lower_switch_interval=False`` leaves it alone.

    Closing: ``close()`` (or ``with``) stops the worker after its block in flight, waits for it
    and gives back the switch interval. An unclosed runtime's worker is a daemon thread that is
    stopped when the runtime is garbage collected, and at interpreter exit after its block in
    flight (up to ``EXIT_JOIN_SECONDS``).

    ``inline=True``: no worker thread; ``infer`` runs the blocks in the caller's own thread (with
    its torch settings: `threads` is not applied), so nothing is handed between threads. The
    interrupt is asked before every block and after every conv part: the answer is still the one
    held when it fired (an answer finished after a deadline does not count), but the call returns
    only once the block in flight has ended, up to one block late. The lean choice where blocks
    are short and a late return costs nothing (the held answer is what the caller reads); an
    adaptive inline runtime learns in the caller's thread, after the answer is made.

    ``engine``: what runs the blocks. ``"native"`` (a compiled network): the blocks, the policy and the rule
    run in C++ without the GIL (:mod:`einet.runtime.native`), inline or on the loop's own C++ worker, with
    the Python loop for what it cannot run; ValueError where it cannot run at all. ``"python"``: the Python
    loop. ``"auto"`` (the default): native for a compiled network where the loop can be built here, else
    Python.

    Inputs: one sample at a time, a batch of one. With an `input_spec` (a bundle's runtime has its
    own) each input must be exactly one normalised image of its shape, else ValueError before
    anything runs; :meth:`prepare` normalises uint8 images as the bundle says.
    """

    def __init__(self, model: MultiExitNetwork, policy: Policy | None = None, rule: str | AnswerRule = "latest",
                 device: str = "cpu", threads: int = 1, adapt: Adaptation | None = None,
                 inline: bool = False, input_spec: InputSpec | None = None,
                 lower_switch_interval: bool = True, engine: str = "auto") -> None:
        rule = as_rule(rule)
        for option, value in (("inline", inline), ("lower_switch_interval", lower_switch_interval)):
            if type(value) is not bool:
                raise EinetTypeError(f"{option} must be True or False, got {value!r}")
        threads = number("threads", threads, 1, 1024, integer=True)
        if inline and threads != 1:
            raise EinetValueError("an inline runtime runs in the caller's thread with its torch settings: leave "
                                  "threads "
                                  "at 1 and call torch.set_num_threads yourself")
        if (policy is None) == (adapt is None):
            raise EinetTypeError("give a policy, or an Adaptation (adapt=...) that plans one")
        self._adaptation = adapt
        policy = adapt.policy if adapt is not None else policy
        assert policy is not None
        if rule.weights is not None and len(rule.weights) != model.num_exits:
            raise EinetValueError(f"the ensemble has {len(rule.weights)} weights, the model {model.num_exits} exits")
        if policy.needs_oracle:
            raise EinetValueError(f"{policy.name} needs each sample's true correctness: it can only be simulated")
        self.device = torch.device(device)
        if inline and self.device.type != "cpu":  # queued CUDA blocks would end long after the interrupt is seen
            raise EinetValueError(f"an inline runtime runs on the CPU only, not {self.device}: use the threaded one")
        self.model = _runnable(model, self.device)
        self._policy = policy
        self.rule = rule
        self.input_spec = input_spec
        # torch's intra-op threads for the worker. One by default: a batch of one gains little from more
        # on a small CPU, and a second core stays free for the caller; profile_et uses the same default.
        self.threads = threads
        # What the runtime adds to the model, measured as it runs (see calibrate()).
        self._statistics = Statistics()
        self.dispatch_seconds = self._statistics.dispatch  # from infer() to the first block starting
        self.planning_seconds = self._statistics.planning  # policy time after each branch run
        self._lock = threading.Lock()  # one inference at a time
        self._owner: int | None = None  # the thread holding it: its interrupt callable may not call back in
        self.last_policy: Policy = policy  # the policy of the latest infer() call
        self._closed = False
        loop = BlockLoop(self.model, self.device, rule, self._statistics)
        self._driver: Driver = make_driver(engine, loop, inline, threads, adapt, lower_switch_interval)
        self.engine = self._driver.loop  # what runs the blocks: the Python loop, or the native one
        self._stop = weakref.finalize(self, self._driver.stop)  # also when collected unclosed
        self._last: tuple[Answer, Job] | None = None  # the latest answer and its job (see completed())

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
        limit = InterruptCheck(interrupt, started)
        self._check_input(x)
        self._refuse_reentry("infer()")
        if self._closed:
            raise RuntimeError("this runtime is closed")
        policy, planned = self.policy, 0.0
        if plan_for_deadline:
            if self._adaptation is None or limit.deadline is None:
                raise EinetValueError("plan_for_deadline needs an adaptive runtime and a deadline in seconds")
            policy = self._adaptation.for_deadline(limit.deadline)
            planned = time.perf_counter() - started  # not block 0's time: the worker starts its clock after it
        self.last_policy = policy
        # (not acquired: another thread's inference held the runtime until the interrupt)
        if not (self._lock.acquire(False) or limit.wait(self._acquire)):
            return Answer(self.rule.time_zero_class, None, 0.0, time.perf_counter() - started, True)
        self._owner = threading.get_ident()
        try:
            if self._closed:  # closed while this call waited for the lock
                raise RuntimeError("this runtime is closed")
            self._raise_late_error()
            job = Job(x, policy, started)
            job.planning = planned
            finished = self._driver.run(job, limit)
            elapsed = time.perf_counter() - started
            if finished and limit.fired(job.ended):
                finished = False  # it ended after the interrupt, and only a late caller saw it end
            if not finished:
                job.stopped = True
            error = job.collect()
            if error is not None:
                raise error
            if finished and not job.queued:
                self._statistics.answers.append(job.answers)  # (complete: the loop is done with it)
            cutoff = elapsed if finished else limit.cutoff(elapsed)
            if self._adaptation is not None:
                self._learn(job, finished, job.ended if finished else cutoff)
            answer = self._answer(job, finished, cutoff, started)
            self._last = (answer, job)
            self._driver.after_answer()
        finally:
            self._owner = None
            self._lock.release()
        return answer

    def _check_input(self, x: Any) -> None:
        """One sample, as the bundle says (its input spec), before anything runs."""
        if not isinstance(x, torch.Tensor):
            raise EinetTypeError(f"the input must be a tensor, got {type(x).__name__}")
        if self.input_spec is not None:
            self.input_spec.check(x)
        elif x.dim() == 0 or x.shape[0] != 1:
            raise EinetValueError(f"the input must be a batch of one sample, got shape {tuple(x.shape)}")

    def _learn(self, job: Job, finished: bool, end: float) -> None:
        """Hand the adaptation what `job` measured: the parts that had ended by `end` (not the part in flight
        at an interrupt, which ends while the caller runs again: learning from it made an idle device look
        1.8x slower), and that part as a lower bound on its time (the longest parts are the likeliest cut)."""
        assert self._adaptation is not None
        running_part = job.in_flight if not finished and not job.queued and self._driver.loop.on_cpu else None
        times = [] if job.queued else list(job.times)  # a queued sample's first block waited: its times mislead
        if self._driver.waits_for_part_in_flight and running_part is not None and times \
                and times[-1][0] == running_part[0]:
            block, conv, _ = times.pop()  # its time is in `times`: learnt as the threaded runtime learns it
            if running_part[1]:  # its branch was in flight: the conv part had ended before
                times.append((block, conv, math.nan))
        self._adaptation.record(times, end, not finished, None if running_part is None else (
            running_part[0], running_part[1], end - running_part[2]))

    def _answer(self, job: Job, finished: bool, cutoff: float, started: float) -> Answer:
        """The answer `job` held at `cutoff` seconds, with what the caller is told of how it ran."""
        held, exits_run = job.held(cutoff)
        exit_index, prediction, confidence = (None, self.rule.time_zero_class, 0.0) if held is None else held
        return Answer(prediction, exit_index, confidence, time.perf_counter() - started, not finished, exits_run,
                      job.planning, tuple(job.times))

    def completed(self, answer: Answer) -> Answer:
        """The latest `answer` with the time of the block that was in flight when it was returned, once that
        block has ended (waits for it): what a replay of the sample needs. Answers are immutable; this is a
        new one."""
        if self._last is None or self._last[0] is not answer:
            raise EinetValueError("only the latest answer of this runtime can be completed")
        self.wait_idle()
        return dataclasses.replace(answer, block_times=tuple(self._last[1].times))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the block an interrupted inference left in flight has ended (True), or
        `timeout` seconds (False). A sample that should start on an idle device waits here first:
        otherwise its deadline, which counts from the call, also covers that block."""
        return self._driver.wait_idle(timeout)

    def prepare(self, images: Any) -> torch.Tensor:
        """uint8 images [N, H, W, C] (or one [H, W, C]) normalised as the network's bundle says, [N, C, H, W]:
        the way in for raw images (``runtime.infer(runtime.prepare(image))``)."""
        if self.input_spec is None:
            raise EinetValueError("this runtime was made without an input spec (a bundle's): normalise inputs yourself")
        return self.input_spec.preprocess(images)

    def _refuse_reentry(self, what: str) -> None:
        """An interrupt callable runs while its infer() holds the runtime: calling back in would wait for itself."""
        if self._owner == threading.get_ident():
            raise RuntimeError(f"{what} called from inside this runtime's own infer() (its interrupt callable): "
                               "call it once infer() has returned")

    def _acquire(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)

    def _raise_late_error(self) -> None:
        """Raise the first error of an inference whose caller had already returned, if any."""
        if self._driver.late_errors:  # (only this thread takes from it)
            raise self._driver.late_errors.popleft()

    def calibrate(self, et: ETProfile) -> ETProfile:
        """`et` with what this runtime adds, as measured over its recent uninterrupted inferences:
        the hand-over from infer() to the worker (added to block 0), the policy's time after each
        branch (added to every branch) and any remaining per-block cost (added to every block).
        Plan and simulate with it to predict this runtime."""
        return self._statistics.calibrate(et)

    @property
    def profile(self) -> ETProfile | None:
        """The block times an adaptive runtime plans with now: its calibration, continuous (every part as
        measured in this runtime, overheads included, see einet.runtime.adaptive). None for a static runtime,
        whose profile is the one its policy was made with (see :meth:`calibrate`)."""
        return None if self._adaptation is None else self._adaptation.profile

    def reset_profile(self) -> None:
        """An adaptive runtime forgets what it learnt, block times and exit times: back to the offline
        profile and the prior (e.g. after moving to another device)."""
        if self._adaptation is None:
            raise EinetValueError("a static runtime learns nothing to reset: give it adapt=Adaptation(...)")
        self._refuse_reentry("reset_profile()")
        with self._lock:  # no inference starts meanwhile, and none is learnt from (the worker learns before idle)
            self.wait_idle()
            self._adaptation.reset()

    def reset_statistics(self) -> None:
        """Forget what the runtime measured so far (e.g. a cold start): :meth:`calibrate` then sees
        only the inferences that follow."""
        self._statistics.clear()

    def close(self) -> None:
        """Stop the worker after its block in flight, wait for it and give back Python's thread switch
        interval; then raise the error of an inference whose caller had already returned, if any."""
        self._refuse_reentry("close()")
        with self._lock:
            self._closed = True
            self._stop()  # once: later calls do nothing
            self._driver.join()
            self._raise_late_error()

    def __enter__(self) -> ElasticRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
