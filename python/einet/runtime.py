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
worker notices the stop when it ends, before the next block).

On CUDA the blocks are queued asynchronously; the only synchronisation is
reading a finished branch's confidence, which the planner needs.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

from .baselines import Policy
from .models.base import MultiExitNetwork
from .planner import ETProfile
from .rules import AnswerRule, RunningAnswer, as_rule

Interrupt = Union[float, threading.Event, Callable[[], bool], None]

POLL_SECONDS = 1e-4  # how often a callable interrupt is asked
SWITCH_INTERVAL = 1e-4  # seconds a thread may hold the GIL while another waits


@dataclass(frozen=True)
class Answer:
    """What an elastic inference returns: the held answer when it ended, and how it ended."""

    prediction: int | None  # class index; None when no branch had finished (and no time-zero answer)
    exit: int | None  # the latest finished exit when it was held (None: the time-zero answer, or none)
    confidence: float  # its max softmax probability (the ensemble's under rule ensemble; 0 when none)
    elapsed: float  # seconds from the start to the moment the answer was returned
    interrupted: bool  # True when a forced exit ended it
    exits_run: tuple[int, ...] = ()  # branches that finished before the end
    planning_seconds: float = 0.0  # time spent in the policy (predict + plan), included in elapsed


@dataclass
class _Published:
    """After every finished branch, in order: (finish time since start, the exit that finished,
    and the answer then held under the runtime's rule: its exit, prediction, confidence)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[tuple[float, int, int, int, float]] = field(default_factory=list)
    planning: float = 0.0
    error: BaseException | None = None

    def held(self, cutoff: float) -> tuple[int, int, float] | None:
        """The answer held at `cutoff` seconds: the one published last by then."""
        with self.lock:
            finished = [a for a in self.answers if a[0] <= cutoff]
        return finished[-1][2:] if finished else None


class ElasticRuntime:
    """Runs one sample at a time with `policy`, returning the best answer held when stopped."""

    def __init__(self, model: MultiExitNetwork, policy: Policy, rule: str | AnswerRule = "latest",
                 device: str = "cpu", threads: int = 1) -> None:
        rule = as_rule(rule)
        if rule.weights is not None and len(rule.weights) != model.num_exits:
            raise ValueError(f"the ensemble has {len(rule.weights)} weights, the model {model.num_exits} exits")
        if policy.needs_oracle:
            raise ValueError(f"{policy.name} needs each sample's true correctness: it can only be simulated")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.policy = policy
        self.rule = rule
        self._running = RunningAnswer(rule)  # the held answer, updated by the worker as branches finish
        # torch's intra-op threads for the worker. One by default: a batch of one gains little from more
        # on a small CPU, and a second core stays free for the caller; profile_et uses the same default.
        self.threads = threads
        # One long-lived worker: a fresh thread per sample would also build a fresh OpenMP team
        # inside torch, costing more than a small model's whole inference.
        self._jobs: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._worker = threading.Thread(target=self._serve, daemon=True, name="einet-runtime")
        self._worker.start()
        # A waiting caller needs the GIL back within its latency budget, not Python's default 5 ms.
        # What the runtime adds to the model, measured as it runs (see calibrate()).
        self.dispatch_seconds: deque[float] = deque(maxlen=1000)  # from infer() to the first block starting
        self.planning_seconds: deque[float] = deque(maxlen=1000)  # policy time after each branch run
        self._answer_times: deque[list[tuple[float, int]]] = deque(maxlen=1000)  # (finish time, exit) per sample
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))

    def _serve(self) -> None:
        torch.set_num_threads(self.threads)
        while (job := self._jobs.get()) is not None:
            *arguments, held, done = job
            try:
                self._run(*arguments, held)
            except BaseException as error:  # handed to the caller, who re-raises it
                held.error = error
            finally:
                done.set()
                self._idle.set()

    def _run(self, x: torch.Tensor, started: float, stop: threading.Event, held: _Published) -> None:
        self.dispatch_seconds.append(time.perf_counter() - started)
        running = self._running
        running.reset()
        with torch.inference_mode():
            h = x.to(self.device, non_blocking=True)
            pending = None  # the last branch's (block, confidence, finish time), not yet told to the policy
            for i in range(self.model.num_exits):
                if stop.is_set():
                    return
                h = self.model.forward_block(i, h)  # on CUDA only queued: the planning below overlaps it
                if pending is not None:
                    before = time.perf_counter()
                    finish = self.policy.observe(*pending)
                    spent = time.perf_counter() - before
                    held.planning += spent
                    self.planning_seconds.append(spent)
                    pending = None
                    if finish:
                        return
                if stop.is_set():
                    return
                before = time.perf_counter()
                run = self.policy.run_branch(i, before - started)
                held.planning += time.perf_counter() - before
                if not run:
                    continue
                log_probs = self.model.forward_exit(i, h).float().log_softmax(-1)[0].cpu().numpy()  # one sync
                if self.policy.needs_log_probs:
                    self.policy.record_log_probs(i, log_probs)
                signal = running.add(i, log_probs)
                finished = time.perf_counter() - started
                with held.lock:
                    held.answers.append((finished, i, running.exit, running.prediction, running.confidence))
                pending = (i, signal, finished)
            if pending is not None:  # the last block's branch: the policy still hears of it
                self.policy.observe(*pending)

    def infer(self, x: torch.Tensor, interrupt: Interrupt = None) -> Answer:
        """Elastic inference of one sample (batch of one) until it ends or `interrupt` fires."""
        if self._worker is None:
            raise RuntimeError("this runtime is closed")
        self._idle.wait()  # the previous, interrupted sample's block in flight
        self._idle.clear()
        stop, done, held = threading.Event(), threading.Event(), _Published()
        self.policy.begin()
        started = time.perf_counter()
        self._jobs.put((x, started, stop, held, done))
        interrupted = self._wait(done, interrupt, started)
        cutoff = time.perf_counter() - started
        if interrupted:
            stop.set()
            if isinstance(interrupt, (int, float)):
                cutoff = min(cutoff, float(interrupt))  # an answer finished after the deadline does not count
        if held.error is not None:
            raise held.error
        if not interrupted:
            self._answer_times.append([(a[0], a[1]) for a in held.answers])
        answer = held.held(cutoff)
        exits_run = tuple(a[1] for a in held.answers if a[0] <= cutoff)
        elapsed = time.perf_counter() - started
        if answer is None:  # no branch finished: the time-zero answer, if the rule holds one
            return Answer(self.rule.prior_class, None, 0.0, elapsed, interrupted, exits_run, held.planning)
        exit_index, prediction, confidence = answer
        return Answer(prediction, exit_index, confidence, elapsed, interrupted, exits_run, held.planning)

    @staticmethod
    def _wait(done: threading.Event, interrupt: Interrupt, started: float) -> bool:
        """Block until the inference is done (False) or the interrupt fires first (True)."""
        if interrupt is None:
            done.wait()
            return False
        if isinstance(interrupt, (int, float)):
            return not done.wait(max(0.0, started + float(interrupt) - time.perf_counter()))
        if isinstance(interrupt, threading.Event):
            while not done.is_set():
                if interrupt.wait(POLL_SECONDS):
                    return not done.is_set()
            return False
        if callable(interrupt):
            while not done.wait(POLL_SECONDS):
                if interrupt():
                    return True
            return False
        raise TypeError(f"interrupt must be seconds, a threading.Event or a callable, got {type(interrupt).__name__}")

    def calibrate(self, et: ETProfile) -> ETProfile:
        """`et` with what this runtime adds, as measured over its recent uninterrupted inferences:
        the hand-over from infer() to the worker (added to block 0), the policy's time after each
        branch (added to every branch) and any remaining per-block cost (added to every block).
        Plan and simulate with it to predict this runtime."""
        if not self._answer_times:
            raise ValueError("run some uninterrupted inferences first: there is nothing to calibrate from")
        dispatch = float(np.median(self.dispatch_seconds))
        planning = float(np.median(self.planning_seconds)) if self.planning_seconds else 0.0
        # Whatever else each block costs here (Python between blocks, reading answers back): the
        # median gap, per block, between when answers came and when `et` says they would.
        per_block = []
        for answers in self._answer_times:
            if not answers:
                continue
            finished, last = answers[-1]
            ran = [exit_index for _, exit_index in answers]
            predicted = dispatch + et.conv[:last + 1].sum() + et.branch[ran].sum() + planning * (len(ran) - 1)
            per_block.append((finished - predicted) / (last + 1))
        extra = max(0.0, float(np.median(per_block))) if per_block else 0.0
        conv = et.conv + extra
        conv[0] += dispatch
        return ETProfile(conv, et.branch + planning)

    def close(self) -> None:
        """Finish the block in flight, stop the worker and restore Python's thread switch interval."""
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None
            sys.setswitchinterval(self._switch_interval)

    def __enter__(self) -> ElasticRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RealtimeReport:
    """Elastic inference under real timer interrupts over many samples."""

    accuracy: float  # share of samples whose returned answer was right (no answer: wrong)
    latencies: tuple[float, ...]  # seconds from each forced exit to the answer's return
    planning_share: float  # time in the policy / total inference time, over the runs not interrupted
    samples: int


def run_with_deadlines(runtime: ElasticRuntime, images: torch.Tensor, labels: Any, deadlines: Any,
                       uninterrupted: int = 100, progress: bool = True) -> RealtimeReport:
    """Each image (a row of `images`) interrupted at its deadline (seconds); then `uninterrupted`
    images run to the end to measure the planner's share of the inference time."""
    from tqdm.auto import tqdm

    right, latencies = 0, []
    for k in tqdm(range(len(deadlines)), desc="real-time", disable=not progress, leave=False):
        answer = runtime.infer(images[k:k + 1], interrupt=float(deadlines[k]))
        right += answer.prediction is not None and answer.prediction == int(labels[k])
        if answer.interrupted:
            latencies.append(answer.elapsed - float(deadlines[k]))
    planning, total = 0.0, 0.0
    for k in range(min(uninterrupted, len(deadlines))):
        answer = runtime.infer(images[k:k + 1])
        planning += answer.planning_seconds
        total += answer.elapsed
    return RealtimeReport(right / len(deadlines), tuple(latencies), planning / total if total else 0.0,
                          len(deadlines))
