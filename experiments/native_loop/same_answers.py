"""Same answers: the native engine and the Python loop on replayed block times, every test image of a bundle.

For a README bundle (default: the VGG-16 row's, compiled for one thread; its cpu entry timed in the compiled
form, as `python -m experiments.native_loop.realtime` leaves it), each CIFAR-10 test image runs through both
engines on the same compiled blocks, with the bundle's deployed policy and rule, until a deadline drawn from
its exit times. Both engines read a virtual clock that each part advances by the entry's ET-profile
(einet.runtime.replay; the native loop's replay). Whether the native engine stops where the Python loop
stops, holds the same answers and times the same parts, image by image.

Run: python -m experiments.native_loop.same_answers [--bundle NAME] [--limit N]
Writes experiments/native_loop/results/same_answers.{md,json}.
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
from einet.data import load
from einet.distributions import sample_exit_times
from einet.forms import network_in
from einet.runtime._statistics import Statistics
from einet.runtime._worker import BlockLoop, Job
from einet.runtime.native import NativeEngine, native_module
from einet.runtime.replay import ReplayedLoop
from experiments.fast_blocks.readme_rows import CIFAR, bundle_of

HERE = Path(__file__).resolve().parent


def compare(name: str, limit: int | None) -> dict:
    """Both engines over the bundle's test images at drawn deadlines: how many agree, and the first that does not."""
    bundle = read_bundle(bundle_of(name))
    torch.set_num_threads(1)
    entry = bundle.entry("cpu", 1)
    network = network_in(bundle, bundle.form(entry), 1)
    et = bundle.planned_profile(entry, bundle.et(entry).profile)
    dist = bundle.distribution()
    policy = bundle.policy(entry, et, dist, bundle.predictor(entry))
    rule = entry.deployment.rule
    conv, branch = [float(t) for t in et.conv], [float(t) for t in et.branch]
    python = ReplayedLoop(network, rule, conv, branch)
    native = NativeEngine(network, rule, Statistics(), native_module(),
                          BlockLoop(network, torch.device("cpu"), rule, Statistics()))
    native.replay = (conv, branch)
    arrays = load("cifar10", str(CIFAR), "test")
    count = min(limit or len(arrays), len(arrays))
    images = bundle.preprocess(arrays.images[:count])
    deadlines = sample_exit_times(dist, (count,), np.random.default_rng(0))
    agree, first_difference, started = 0, None, time.perf_counter()
    for k in range(count):
        runs = []
        for engine in (python, native):  # (the same contract: einet.runtime._drivers.Engine)
            job = Job(images[k:k + 1], policy, 0.0)
            stopped = engine.run(job, None, float(deadlines[k]))
            runs.append((stopped, [a[1:4] for a in job.answers], [t[0] for t in job.times],
                         np.round([a[0] for a in job.answers], 12).tolist()))
        if runs[0] == runs[1]:
            agree += 1
        elif first_difference is None:
            first_difference = {"image": k, "python": runs[0], "native": runs[1]}
    return {"bundle": name, "policy": policy.name, "rule": rule.name, "images": count, "agree": agree,
            "first_difference": first_difference, "seconds": round(time.perf_counter() - started)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="vgg16_fine_deployed")
    parser.add_argument("--limit", type=int, default=None, help="the first N test images only")
    args = parser.parse_args(argv)
    if not CIFAR.exists() or native_module() is None:
        print("needs CIFAR-10 in ../shared/data and a native engine here", file=sys.stderr)
        return 2
    result = compare(args.bundle, args.limit)
    out = HERE / "results" / "same_answers"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    text = (f"{result['bundle']} ({result['policy']}, rule {result['rule']}), on replayed block times, deadlines "
            f"drawn from its exit times: the native engine stops where the Python loop stops, holds the same "
            f"answers and times the same parts on {result['agree']} of {result['images']} CIFAR-10 test images "
            f"({result['seconds']} s).\n")
    out.with_suffix(".md").write_text(text)
    print(text, json.dumps(result["first_difference"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
