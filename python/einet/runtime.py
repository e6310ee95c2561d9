"""The online elastic inference loop, under real interrupts (DESIGN.md section 7).

A worker thread runs the model block by block. After each block's conv part
the policy decides whether to run its branch; every finished branch's answer
is published at once (rule ``latest`` or ``best``), and its confidence goes to
the policy, which re-plans (EINet: one native predict-and-search call). The
policy hears of a branch right after the next block has been issued, so on
CUDA the planning overlaps that block's kernels instead of idling the GPU. The caller
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from .baselines import Policy
from .models.base import MultiExitNetwork

Interrupt = Union[float, threading.Event, Callable[[], bool], None]

POLL_SECONDS = 1e-4  # how often a callable interrupt is asked
SWITCH_INTERVAL = 1e-4  # seconds a thread may hold the GIL while another waits


@dataclass(frozen=True)
class Answer:
    """What an elastic inference returns: the held answer when it ended, and how it ended."""

    prediction: int | None  # class index; None when no branch had finished
    exit: int | None  # which exit produced it
    confidence: float  # its max softmax probability (0 when none)
    elapsed: float  # seconds from the start to the moment the answer was returned
    interrupted: bool  # True when a forced exit ended it
    exits_run: tuple[int, ...] = ()  # branches that finished before the end
    planning_seconds: float = 0.0  # time spent in the policy (predict + plan), included in elapsed


@dataclass
class _Published:
    """Every finished branch's answer, in order: (finish time since start, exit, prediction, confidence)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[tuple[float, int, int, float]] = field(default_factory=list)
    planning: float = 0.0

    def held(self, rule: str, cutoff: float) -> tuple[int, int, float] | None:
        """The answer held at `cutoff` seconds: the latest, or the most confident, finished by then."""
        with self.lock:
            finished = [a for a in self.answers if a[0] <= cutoff]
        if not finished:
            return None
        chosen = finished[-1] if rule == "latest" else max(finished, key=lambda a: a[3])
        return chosen[1], chosen[2], chosen[3]


class ElasticRuntime:
    """Runs one sample at a time with `policy`, returning the best answer held when stopped."""

    def __init__(self, model: MultiExitNetwork, policy: Policy, rule: str = "latest", device: str = "cpu",
                 threads: int | None = None) -> None:
        if rule not in ("latest", "best"):
            raise ValueError(f"unknown rule {rule!r}: expected 'latest' or 'best'")
        if policy.needs_oracle:
            raise ValueError(f"{policy.name} needs each sample's true correctness: it can only be simulated")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.policy = policy
        self.rule = rule
        self.threads = threads or torch.get_num_threads()  # torch's intra-op threads are per calling thread
        # One long-lived worker: a fresh thread per sample would also build a fresh OpenMP team
        # inside torch, costing more than a small model's whole inference.
        self._jobs: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._worker = threading.Thread(target=self._serve, daemon=True, name="einet-runtime")
        self._worker.start()
        # A waiting caller needs the GIL back within its latency budget, not Python's default 5 ms.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))

    def _serve(self) -> None:
        torch.set_num_threads(self.threads)
        while (job := self._jobs.get()) is not None:
            try:
                self._run(*job)
            finally:
                self._idle.set()

    def _run(self, x: torch.Tensor, started: float, stop: threading.Event, held: _Published,
             done: threading.Event) -> None:
        try:
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
                        held.planning += time.perf_counter() - before
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
                    probabilities = self.model.forward_exit(i, h).float().softmax(-1)
                    confidence_t, prediction_t = probabilities.max(-1)
                    confidence, prediction = float(confidence_t), int(prediction_t)  # the one sync per branch
                    finished = time.perf_counter() - started
                    with held.lock:
                        held.answers.append((finished, i, prediction, confidence))
                    pending = (i, confidence, finished)
        finally:
            done.set()

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
        answer = held.held(self.rule, cutoff)
        exits_run = tuple(a[1] for a in held.answers if a[0] <= cutoff)
        elapsed = time.perf_counter() - started
        if answer is None:
            return Answer(None, None, 0.0, elapsed, interrupted, exits_run, held.planning)
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
