"""Interrupt latency: from a deadline to the answer in the caller's hands, per engine and driver.

For a README bundle (default: the VGG-16 row's, compiled for one thread, its cpu entry timed in the
compiled form), its first timing images one after another, each interrupted at a deadline drawn uniformly
from [0, 1.2 x its full inference] after the call: lateness = when ``infer()`` returned minus when its
deadline was due (0 when it returned earlier, the inference having ended). The four runtimes (the Python
loop and the native engine, each threaded and inline) alternate call by call; idle and with two steady CPU
burners. A threaded runtime answers at the deadline itself; an inline one once the part in flight ends.

Run: python -m experiments.native_loop.latency [--bundle NAME] [--calls N] [--loads idle steady]
Writes experiments/native_loop/results/latency.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from einet.bundle import read_bundle
from einet.runtime.stress import Burners
from experiments.fast_blocks.readme_rows import bundle_of

HERE = Path(__file__).resolve().parent
RUNTIMES = {"Python loop, threaded": {"inline": False, "engine": "python"},
            "Python loop, inline": {"inline": True, "engine": "python"},
            "native engine, threaded": {"inline": False, "engine": "native"},
            "native engine, inline": {"inline": True, "engine": "native"}}


def lateness_under(path: Path, load_name: str, calls: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Each runtime's lateness (ms) at random deadlines, the runtimes alternating call by call."""
    bundle = read_bundle(path)
    full = bundle.et(bundle.entry("cpu", 1)).profile.total()
    images = bundle.preprocess(bundle.timing_images())
    runtimes = {name: bundle.runtime("cpu", 1, adapt=False, **options) for name, options in RUNTIMES.items()}
    late: dict[str, list[float]] = {name: [] for name in runtimes}
    rng = np.random.default_rng(seed)
    try:
        with Burners.for_load(load_name):
            for k in range(calls):
                deadline = float(rng.uniform(0.0, 1.2 * full))
                x = images[k % len(images):k % len(images) + 1]
                for name, runtime in runtimes.items():
                    runtime.wait_idle()  # each call starts on an idle device
                    started = time.perf_counter()
                    runtime.infer(x, interrupt=deadline)
                    late[name].append(max(0.0, time.perf_counter() - started - deadline))
    finally:
        for runtime in runtimes.values():
            runtime.close()
    return {name: {"p50_ms": 1e3 * float(np.percentile(values, 50)), "p99_ms": 1e3 * float(np.percentile(values, 99))}
            for name, values in late.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="vgg16_fine_deployed")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--loads", nargs="+", default=["idle", "steady"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = bundle_of(args.bundle)
    rows = {load_name: lateness_under(path, load_name, args.calls) for load_name in args.loads}
    out = HERE / "results" / "latency"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"bundle": args.bundle, "calls": args.calls, "loads": rows},
                                                   indent=1) + "\n")
    lines = [f"{args.bundle}, {args.calls} calls per runtime and load, deadlines uniform over 1.2 x its full "
             "inference; lateness (the answer's return after its deadline), p50 / p99", "",
             "| load | " + " | ".join(RUNTIMES) + " |", "|---|" + "---:|" * len(RUNTIMES)]
    for load_name, figures in rows.items():
        lines.append(f"| {load_name} | " + " | ".join(f"{f['p50_ms']:.3f} / {f['p99_ms']:.3f} ms"
                                                       for f in figures.values()) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
