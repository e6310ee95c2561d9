"""Interrupt latency of the elastic runtime under random interrupts, a slow block often in flight.

A 4-block model (blocks of --block-ms, the third one --slow-ms; each block busy in torch for its
time, or asleep with --sleep) runs back to back under --calls random interrupts: a deadline
(60%), a ``threading.Event`` set by a timer (20%) or a callable (20%), each due at a moment
drawn uniformly from [0, 1.2 x the whole inference] after the call. A call made right after an
interrupted one often finds the previous sample's block, the slow one included, still running.

For every call: lateness = when it returned - when its interrupt was due (0 when it returned
earlier). Goal: p99 lateness <= --goal-ms (2 ms), and ``interrupted`` set on every call whose
inference had not ended when its interrupt was due (the last exit's end, timed inside the model).
Also shown: ``Answer.elapsed`` against the caller's own clock (it counts from the call), and the
calls made while the previous sample's block, the slow one in particular, was still running.

    python tools/interrupt_check.py                 # 1,000 calls, about 30 s
    python tools/interrupt_check.py --sleep --json out.json

Prints a summary (with the load average: the figure depends on what else the machine runs);
exit status 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np
import torch
from torch import nn

from einet.models import MultiExitNetwork
from einet.policies import EveryExit
from einet.runtime import Answer, ElasticRuntime

IN_FLIGHT: dict[str, int | None] = {"block": None}  # the block running now, if any (set by the blocks)
LAST_EXIT = {"ended": 0.0}  # when the last exit's branch last ended (the end of a whole inference)


class Block(nn.Module):
    """Takes `seconds`: matrix products in torch (the GIL released inside each), or a sleep."""

    def __init__(self, index: int, seconds: float, sleep: bool) -> None:
        super().__init__()
        self.index, self.seconds, self.sleep = index, seconds, sleep
        self.w = torch.randn(96, 96) / 10

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        IN_FLIGHT["block"] = self.index
        try:
            end = time.perf_counter() + self.seconds
            if self.sleep:
                time.sleep(self.seconds)
                return h
            a = self.w
            while time.perf_counter() < end:
                a = torch.tanh(a @ self.w)
            return h + a[0, 0] * 0
        finally:
            IN_FLIGHT["block"] = None


class Head(nn.Module):
    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(h.shape[0], 4)
        logits[:, self.label] = 3.0
        if self.label == 3:
            LAST_EXIT["ended"] = time.perf_counter()
        return logits


KINDS = ("deadline", "event", "callable")


def parse_args() -> argparse.Namespace:
    """The command line: the blocks, the calls, the goal and where to write the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--block-ms", type=float, default=2.0)
    parser.add_argument("--slow-ms", type=float, default=40.0)
    parser.add_argument("--sleep", action="store_true", help="blocks sleep instead of computing")
    parser.add_argument("--goal-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the summary here too")
    return parser.parse_args()


def timed_call(runtime: ElasticRuntime, x: torch.Tensor, kind: str, due: float) -> tuple[Answer, float, float, float]:
    """One call under an interrupt of `kind` due `due` s after it: the answer, when it was called, when it
    returned and when its interrupt was due (for an event: when the timer actually set it)."""
    if kind == "deadline":
        call = time.perf_counter()
        answer = runtime.infer(x, interrupt=float(due))
        returned = time.perf_counter()
        return answer, call, returned, call + due
    if kind == "event":
        event = threading.Event()
        fired: dict[str, float] = {}

        def fire_event() -> None:
            fired["at"] = time.perf_counter()
            event.set()

        timer = threading.Timer(float(due), fire_event)
        timer.start()  # (starting a thread takes a while on a loaded machine: not the runtime's time)
        call = time.perf_counter()
        answer = runtime.infer(x, interrupt=event)
        returned = time.perf_counter()
        timer.join()  # (when the inference ended first, the event still fires: its moment is known)
        return answer, call, returned, fired["at"]
    call = time.perf_counter()
    stop_at = call + due
    answer = runtime.infer(x, interrupt=lambda: time.perf_counter() >= stop_at)
    returned = time.perf_counter()
    return answer, call, returned, stop_at


def measure(model: MultiExitNetwork, kinds: np.ndarray, due: np.ndarray, rng: np.random.Generator,
            whole: float) -> tuple[list[dict], dict[str, object]]:
    """Runs the calls back to back (after a warm-up): a row per call, and the machine's state around them."""
    x = torch.zeros(1, 8)
    load_before = os.getloadavg()
    rows = []
    with ElasticRuntime(model, EveryExit()) as runtime:
        for _ in range(20):  # warm-up, not counted
            runtime.infer(x, interrupt=float(rng.uniform(0.0, whole)))
        started_all = time.perf_counter()
        for k in range(len(kinds)):
            in_flight = IN_FLIGHT["block"]
            answer, call, returned, fire = timed_call(runtime, x, str(kinds[k]), due[k])
            ended_late = bool(not answer.interrupted and LAST_EXIT["ended"] > fire)  # (no interrupt lets it stop early)
            rows.append({"kind": str(kinds[k]), "due": float(due[k]), "late": returned - fire,
                         "interrupted": answer.interrupted, "ended_after_due": ended_late,
                         "elapsed_gap": (returned - call) - answer.elapsed, "in_flight": in_flight,
                         "exits": len(answer.exits_run)})
        wall = time.perf_counter() - started_all
        switch_interval = sys.getswitchinterval()  # (while the runtime is open)
    load_after = os.getloadavg()
    return rows, {"load_average_before_after": [round(v, 2) for v in (*load_before, *load_after)],
                  "cpus": os.cpu_count(), "switch_interval_s": switch_interval, "wall_s": round(wall, 1)}


def ms(values: np.ndarray, q: float) -> float:
    """The q-th percentile of `values` (seconds) in ms, rounded for the summary; nan when there are none."""
    return round(1e3 * float(np.percentile(values, q)), 3) if len(values) else float("nan")


def summarize(args: argparse.Namespace, times: list[float], kinds: np.ndarray, rows: list[dict], slow: int,
              machine: dict[str, object]) -> dict[str, object]:
    """The summary printed and written: lateness overall, behind the slow block and by kind, and the goal."""
    late = np.maximum(0.0, np.array([r["late"] for r in rows]))
    goal = args.goal_ms / 1e3
    not_interrupted = [r for r in rows if r["ended_after_due"]]
    behind_slow = np.array([r["in_flight"] == slow for r in rows])
    behind_any = np.array([r["in_flight"] is not None for r in rows])
    summary = {
        "calls": args.calls, "blocks_ms": times, "blocks": "sleep" if args.sleep else "torch compute",
        "kinds": {kind: int((kinds == kind).sum()) for kind in KINDS},
        "interrupted": int(sum(r["interrupted"] for r in rows)),
        "calls_with_a_block_in_flight": int(behind_any.sum()), "calls_with_the_slow_block_in_flight":
            int(behind_slow.sum()),
        "lateness_ms": {"p50": ms(late, 50), "p99": ms(late, 99), "max": ms(late, 100)},
        "lateness_ms_slow_block_in_flight": {"p50": ms(late[behind_slow], 50), "p99": ms(late[behind_slow], 99),
                                             "max": ms(late[behind_slow], 100)},
        "lateness_p99_ms_by_kind": {kind: ms(late[kinds == kind], 99) for kind in KINDS},
        "late_by_over_goal": int((late > goal).sum()),
        "ended_after_due_without_interrupted": len(not_interrupted),
        "returned_over_goal_late_without_interrupted":
            int(sum(r["late"] > goal and not r["interrupted"] for r in rows)),
        "elapsed_vs_caller_clock_max_gap_ms": round(1e3 * max(abs(r["elapsed_gap"]) for r in rows), 3),
        "goal": f"p99 lateness <= {args.goal_ms} ms, interrupted whenever late",
        **machine,
    }
    summary["goal_met"] = bool(float(np.percentile(late, 99)) <= goal and not not_interrupted)
    return summary


def main() -> int:
    """Builds the 4-block model, runs the calls and reports: exit status 1 when the goal is missed."""
    args = parse_args()
    torch.set_num_threads(1)
    times = [args.block_ms, args.block_ms, args.slow_ms, args.block_ms]
    slow = 2
    model = MultiExitNetwork([Block(i, t / 1e3, args.sleep) for i, t in enumerate(times)],
                             [Head(i) for i in range(len(times))])
    whole = sum(times) / 1e3
    rng = np.random.default_rng(args.seed)
    kinds = rng.choice(list(KINDS), args.calls, p=[0.6, 0.2, 0.2])
    due = rng.uniform(0.0, 1.2 * whole, args.calls)
    rows, machine = measure(model, kinds, due, rng, whole)
    summary = summarize(args, times, kinds, rows, slow, machine)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "calls": rows}, f, indent=1)
    return 0 if summary["goal_met"] else 1

if __name__ == "__main__":
    sys.exit(main())
