"""Would planning with how block times vary, not only their means, choose better plans?

The adaptive runtime plans with mean block times; its promise (``einet.runtime.realtime.promised``)
also knows how they vary: the part delays of earlier samples. Under a load, per model: an inline
adaptive runtime (the statistics plan, re-planned as it learns) runs a stream of CIFAR-10 test
images, each stopped at a normal deadline, and each image's part delays are recorded. Then every
fixed plan (every non-empty set of exits) is scored exactly (``einet.planner.expected_accuracy``,
rule ``latest``) with the runtime's final mean times plus each recorded delay pattern: the plan best
for the mean times against the plan best averaged over the first half's patterns (chosen on the
held-out split's per-exit accuracies), compared on the test split's accuracies with the second
half's patterns, paired per pattern.

    python -m experiments.adaptive.variation_check --load steady --samples 1000 --out experiments/adaptive/results

Needs the committed fixtures with weights and ../shared/data (CIFAR-10 test images).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from einet.distributions import full_inference_time, relative_distribution, sample_exit_times
from einet.formats.profiles import CSProfile
from einet.planner import Distribution, ETProfile, expected_accuracy
from einet.validation import integer_option
from experiments.adaptive.adaptive_check import FIXTURES, MODELS, SHARED, paired, show

MAX_EXITS = 16  # every plan is scored: 2^N - 1 of them


def record(name: str, load: str, samples: int) -> tuple[ETProfile, list[tuple[np.ndarray, np.ndarray]], Distribution]:
    """The runtime's final mean times, each image's part delays, and the deadlines' distribution."""
    import torch

    from einet import data
    from einet.formats.checkpoint import load_checkpoint
    from einet.formats.predictor_file import load_native_predictor
    from einet.profiling import profile_et
    from einet.runtime import ElasticRuntime
    from einet.runtime.adaptive import Adaptation, replanning
    from einet.runtime.realtime import COLD_START_RUNS, part_delays, run_stream
    from einet.runtime.stress import Burners

    torch.set_num_threads(1)
    test = data.load("cifar10", SHARED / "cifar10-jpeg.zip", "test")
    images = data.dataset_for("cifar10", test, False).images
    network, _ = load_checkpoint(FIXTURES / name / "model.pt")
    holdout = CSProfile.load(FIXTURES / name / "cs-holdout.npz")
    _, rule = load_native_predictor(FIXTURES / name / MODELS[name])
    chosen = np.random.default_rng(1).choice(len(test), samples, replace=False)
    base = profile_et(network, (3, 32, 32), warmup=20, repeats=300, progress=False,
                      samples=images[chosen[:200]]).profile
    dist = relative_distribution("normal", full_inference_time(base))
    deadlines = sample_exit_times(dist, (samples,), np.random.default_rng(2))
    x, y = images[chosen], test.labels[chosen]
    with Burners.for_load(load, limit=3600):
        time.sleep(0.5)
        adaptation = Adaptation(replanning(holdout, rule), base, dist, full_inference_time(base), learn_exits=False)
        with ElasticRuntime(network, rule=rule, adapt=adaptation, inline=True) as runtime:
            for k in range(COLD_START_RUNS + 100):
                runtime.infer(x[k % len(x):k % len(x) + 1])
            stream = run_stream(runtime, x, y, deadlines)
    delays = [part_delays(a, p, d) for a, p, d in zip(stream.answers, stream.profiles, stream.deadlines)]
    return stream.profiles[-1], delays, dist


def scores(plans: np.ndarray, accuracy: np.ndarray, mean: ETProfile, delays: list[tuple[np.ndarray, np.ndarray]],
           dist: Distribution) -> np.ndarray:
    """[patterns, plans]: each plan's exact expected accuracy with the mean times plus each pattern."""
    return np.array([expected_accuracy(plans, accuracy, ETProfile(np.maximum(mean.conv + conv, 0.0),
                                                                  np.maximum(mean.branch + branch, 0.0)), dist)
                     for conv, branch in delays])


def study(name: str, load: str, samples: int) -> dict[str, Any]:
    mean, delays, dist = record(name, load, samples)
    if mean.num_blocks > MAX_EXITS:
        raise ValueError(f"{name}: {mean.num_blocks} exits, over the {MAX_EXITS} whose plans can all be scored")
    holdout, test = (CSProfile.load(FIXTURES / name / f"cs-{split}.npz") for split in ("holdout", "test"))
    plans = np.array(list(itertools.product([False, True], repeat=mean.num_blocks))[1:], dtype=np.uint8)
    held_out, tested = holdout.correct.mean(0), test.correct.mean(0)
    half = len(delays) // 2
    for_means = int(np.argmax(expected_accuracy(plans, held_out, mean, dist)))
    for_variation = int(np.argmax(scores(plans, held_out, mean, delays[:half], dist).mean(0)))
    scored = scores(plans[[for_variation, for_means]], tested, mean, delays[half:], dist)
    return {"model": name, "load": load, "samples": samples,
            "plan_for_means": np.flatnonzero(plans[for_means]).tolist(),
            "plan_for_variation": np.flatnonzero(plans[for_variation]).tolist(),
            "means_plan": 100 * float(scored[:, 1].mean()), "variation_plan": 100 * float(scored[:, 0].mean()),
            "variation_minus_means": paired(scored[:, 0] - scored[:, 1])}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | load | plan for the mean times | plan for their variation | the mean plan scores | "
             "variation plan - mean plan |", "|---|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['load']} | {r['plan_for_means']} | {r['plan_for_variation']} | "
                     f"{r['means_plan']:.2f}% | {show(r['variation_minus_means'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--load", default="steady", choices=["idle", "steady", "switching"])
    parser.add_argument("--samples", type=integer_option(2, 10_000), default=1000,
                        help="test images in the stream (half choose the plan, half score it)")
    parser.add_argument("--out", type=Path, help="write OUT/variation.md and .json")
    args = parser.parse_args()
    rows = [study(name, args.load, args.samples) for name in args.models]
    text = table(rows)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "variation.md").write_text(text)
        (args.out / "variation.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
