"""What the loop around the blocks costs: the native engine and the Python loop against a direct C++ chain of
the same compiled packages, per inference, alternated in one run.

For each bundle (compiled for one thread; `einet compile` where it is not yet), one torch thread, the
bundle's first timing image:

- direct: every block and exit called from C++ one after the other, nothing between them
  (``NativeLoop.direct_chain``);
- the native loop alone: one sample through ``NativeLoop.run`` (the C++ loop, called from Python with its
  arguments as the engine passes them), every branch run;
- the four runtimes, ``infer()`` from the call to its return, every branch run (EveryExit): the native
  engine and the Python loop, each inline and threaded.

Rounds alternate them (each round: 20 calls of each, in rotating order); the figures are medians over
the rounds. "To the first block": the runtime's own measure (``runtime.dispatch_seconds``), from ``infer()``
to block 0 starting.

Run: python -m experiments.native_loop.overhead [--bundles NAME ...] [--rounds N]
Writes experiments/native_loop/results/overhead.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from einet.bundle import read_bundle
from einet.forms import ensure_compiled, network_in
from einet.models.inference import InferenceForm
from einet.policies.base import EveryExit
from einet.runtime import ElasticRuntime
from einet.runtime.native import native_module

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BUNDLES = ("b_alexnet_w025_light", "flex_vgg16", "resnet50_fine", "vgg16_fine_deployed")


def measure(name: str, rounds: int, calls: int = 20) -> dict:
    bundle = read_bundle(ROOT / "runs" / f"{name}.einet")
    torch.set_num_threads(1)
    ensure_compiled(bundle, 1, log=lambda _: None)
    network = network_in(bundle, InferenceForm("compiled"), 1)
    x = bundle.preprocess(bundle.timing_images()[:1])
    chain = native_module().NativeLoop([str(p) for p in network.block_packages],
                                       [str(p) for p in network.exit_packages], "latest", [], -1)
    runtimes = {f"{engine} {driver}": ElasticRuntime(network, EveryExit(), inline=driver == "inline", engine=engine)
                for engine in ("native", "python") for driver in ("inline", "threaded")}
    every = [1] * network.num_exits

    def loop_alone() -> float:
        started = time.perf_counter()
        chain.run([x], started, 0.0, math.inf, False, every, 0, 0, 0, None)
        return time.perf_counter() - started

    timers = {"direct": lambda: chain.direct_chain([x]), "loop": loop_alone}
    for key, runtime in runtimes.items():
        timers[key] = lambda runtime=runtime: runtime.infer(x).elapsed
    for timer in timers.values():  # warm
        for _ in range(calls):
            timer()
    for runtime in runtimes.values():
        runtime.reset_statistics()
    samples: dict[str, list[float]] = {key: [] for key in timers}
    order = list(timers)
    for r in range(rounds):
        for key in order[r % len(order):] + order[:r % len(order)]:
            samples[key].append(float(np.median([timers[key]() for _ in range(calls)])))
    median = {key: float(np.median(values)) for key, values in samples.items()}
    dispatch = {engine: float(np.median(runtime.dispatch_seconds)) for engine, runtime in runtimes.items()}
    for runtime in runtimes.values():
        runtime.close()
    branches = network.num_exits
    return {"bundle": name, "branches": branches, "direct_us": 1e6 * median["direct"],
            "over_direct_us": {key: 1e6 * (median[key] - median["direct"]) for key in timers if key != "direct"},
            "goal_us": 5.0 + 1.0 * branches,
            "to_first_block_us": {key: 1e6 * value for key, value in dispatch.items()}}


MODES = ("native inline", "native threaded", "python inline", "python threaded")


def table(rows: list[dict]) -> str:
    lines = ["Per inference over the direct C++ chain (median): the native loop alone, then `infer()` of each runtime; "
             "and `infer()` to the first block.", "",
             "| bundle (branches) | direct C++ chain | goal (5 us + 1 us a branch) | native loop alone | "
             + " | ".join(f"{mode} infer()" for mode in MODES) + " | to the first block: " + " / ".join(MODES) + " |",
             "|---|---:|---:|---:|" + "---:|" * (len(MODES) + 1)]
    for row in rows:
        over, first = row["over_direct_us"], row["to_first_block_us"]
        lines.append(f"| {row['bundle']} ({row['branches']}) | {row['direct_us']:,.0f} us | {row['goal_us']:.0f} us | "
                     f"{over['loop']:+.1f} us | " + " | ".join(f"{over[mode]:+.1f} us" for mode in MODES) + " | "
                     + " / ".join(f"{first[mode]:.1f}" for mode in MODES) + " us |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", nargs="+", default=[b for b in BUNDLES if (ROOT / "runs" / f"{b}.einet").exists()])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if native_module() is None:
        print("no native engine here (see the log)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    rows = [measure(name, args.rounds) for name in args.bundles]
    out = HERE / "results" / "overhead"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(rows))
    print(table(rows), f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
