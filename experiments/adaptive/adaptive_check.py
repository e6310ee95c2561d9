"""The adaptive runtime's figures (issue: elastic inference on a busy, changing device).

Two studies, each paired (same images, same deadlines) with 95% intervals:

``loads``: real time, per model and load (idle, two steady CPU burners, two burners switched
on and off every 1.5 s): the static runtime (profile calibrated once, as today) and the adaptive
one (block times learnt as it runs) on the same images and deadlines, side by side (each image
through both in turn, the order alternating), so the load hits both alike; and "slowed": an idle
machine where every block and branch takes 3x as long from the start of the stream on (after the
calibration: a device that throttles). Reported: each one's real-time accuracy; each one minus
the simulator of the profile it planned with (the static runtime: its calibrated one; the
adaptive one: its estimate before each sample, the mean times); the adaptive runtime minus its
promise (``einet.runtime.realtime.promised``: those times plus the part delays of earlier
samples); the adaptive runtime minus the simulator replaying the block times it observed (only
the runtime's mechanics can differ); adaptive minus static.

``exit-times``: simulated, per model: the exit-time distribution is assumed uniform, the true one
is normal, exponential, bimodal, or uniform switching to normal mid-stream. After 500 samples
(after the switch), the adaptive policy (Kaplan-Meier estimate, re-planned as the runtime does)
and the static one minus an oracle that knows the true distribution, in exact expected accuracy.

    python experiments/adaptive/adaptive_check.py loads --samples 2000 --out experiments/adaptive/results
    python experiments/adaptive/adaptive_check.py exit-times --out experiments/adaptive/results

Needs the committed fixtures with weights and, for ``loads``, ../shared/data (CIFAR-10 test images).
Prints a markdown table and writes OUT/<study>.md and OUT/<study>.json when --out is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from einet.distributions import full_inference_time, relative_distribution, sample_exit_times
from einet.evaluation.simulate import ci95_half_width, evaluate, replay
from einet.formats.predictor_file import load_native_predictor
from einet.formats.profiles import CSProfile, ETRecord
from einet.planner import Distribution, Empirical, ETProfile
from einet.policies import Policy
from einet.rules import AnswerRule
from einet.runtime.adaptive import Adaptation, replanning

if TYPE_CHECKING:
    import torch

    from einet.data import ImageArrays
    from einet.runtime.stress import Slowed

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "benchmarks" / "fixtures"
SHARED = ROOT.parent / "shared" / "data"
SLOWDOWN = 3.0  # load "slowed": the factor on every block and branch time (einet.runtime.stress.Slowed)
MODELS = {"b_alexnet_w05_cpu": "predictor-ensemble.npz", "vgg16_fine_w025_cpu_light": "predictor-ensemble.npz"}


def paired(values: np.ndarray) -> dict[str, float]:
    """Mean and paired 95% half-width, in percentage points."""
    return {"mean_pp": 100 * float(np.mean(values)), "ci95_pp": 100 * ci95_half_width(values)}


def show(cell: dict[str, float]) -> str:
    star = "*" if abs(cell["mean_pp"]) > cell["ci95_pp"] else ""
    return f"{cell['mean_pp']:+.2f} ± {cell['ci95_pp']:.2f}{star}"


# ---------------------------------------------------------------- loads (real time)

@dataclass
class _Stream:
    """One model's stream in the ``loads`` study: what every load runs, on the same images and deadlines."""

    model: Slowed  # the network, every block and branch `factor["now"]` times as long (load "slowed")
    factor: dict[str, float]
    policy_for: Callable[[ETProfile, Distribution], Policy]
    rule: AnswerRule
    base: ETProfile  # measured idle, as a user profiles
    horizon: float
    dist: Distribution
    cs: CSProfile  # the chosen test images'
    x: torch.Tensor
    y: np.ndarray
    deadlines: np.ndarray


def _stream(args: argparse.Namespace, name: str, test: ImageArrays, images: torch.Tensor) -> _Stream:
    """Loads a fixture's network, profiles it idle and draws the images and deadlines its stream runs."""
    from einet.formats.checkpoint import load_checkpoint
    from einet.profiling import profile_et
    from einet.runtime.stress import Slowed

    folder = FIXTURES / name
    network, _ = load_checkpoint(folder / "model.pt")
    factor = {"now": 1.0}
    # load "slowed": every block SLOWDOWN times as long once the stream starts
    model = Slowed(network, lambda: factor["now"])
    holdout, cs = CSProfile.load(folder / "cs-holdout.npz"), CSProfile.load(folder / "cs-test.npz")
    native, rule = load_native_predictor(folder / MODELS[name])
    policy_for = replanning(holdout, rule, native)
    chosen = np.random.default_rng(1).choice(len(test), args.samples, replace=False)
    base = profile_et(network, (3, 32, 32), warmup=20, repeats=args.repeats, progress=False,
                      samples=images[chosen[:200]]).profile  # measured idle, as a user profiles
    horizon = full_inference_time(base)
    dist = relative_distribution(args.dist, horizon)
    deadlines = sample_exit_times(dist, (args.samples,), np.random.default_rng(2))
    return _Stream(model, factor, policy_for, rule, base, horizon, dist, cs.subset(chosen), images[chosen],
                   test.labels[chosen], deadlines)


def _under_load(args: argparse.Namespace, s: _Stream, load: str) -> dict[str, Any]:
    """The static and the adaptive runtime side by side under one load, each against its simulator, its promise
    and the other: the figures of one row."""
    from einet.evaluation.simulate import correct_at
    from einet.runtime import ElasticRuntime
    from einet.runtime.realtime import COLD_START_RUNS, promised, replay_observed, run_streams
    from einet.runtime.stress import Burners

    x, rule, policy_for = s.x, s.rule, s.policy_for
    s.factor["now"] = 1.0
    with Burners.for_load("idle" if load == "slowed" else load, period=args.period, limit=3600):
        time.sleep(0.5)  # the burners are running (or switching) before anything is timed
        # static: calibrated once, under whatever load there is then (today's runtime); adaptive:
        # the same warm-up feeds its estimates; then both side by side, image by image
        adaptation = Adaptation(policy_for, s.base, s.dist, s.horizon, learn_exits=False)
        with ElasticRuntime(s.model, policy_for(s.base, s.dist), rule=rule, inline=args.inline) as static_runtime, \
                ElasticRuntime(s.model, rule=rule, adapt=adaptation, inline=args.inline) as adaptive_runtime:
            for runtime in (static_runtime, adaptive_runtime):
                for k in range(COLD_START_RUNS):
                    runtime.infer(x[k:k + 1])
                runtime.reset_statistics()
                for k in range(args.warmup):
                    runtime.infer(x[k % len(x):k % len(x) + 1])
            calibrated = static_runtime.calibrate(s.base)
            static_runtime.policy = policy_for(calibrated, s.dist)
            if load == "slowed":
                s.factor["now"] = SLOWDOWN
            static, adaptive = run_streams([(static_runtime, calibrated), (adaptive_runtime, None)], x, s.y,
                                           s.deadlines)
            s.factor["now"] = 1.0
            replans, slowdown = adaptation.replans, adaptation.block_times.slowdown
            planning_ms = 1e3 * float(np.sum(adaptation.planning_seconds))
        static_sim = correct_at(policy_for(calibrated, s.dist), s.cs, calibrated, s.deadlines, rule)
        adaptive_sim = replay_observed(adaptive, s.cs, rule)
        adaptive_means = replay_observed(adaptive, s.cs, rule, observed=False)
        adaptive_promise = promised(adaptive, s.cs, rule)
    return {"static": 100 * static.accuracy, "adaptive": 100 * adaptive.accuracy,
            "static_minus_simulator": paired(static.correct.astype(float) - static_sim),
            "adaptive_minus_replay": paired(adaptive.correct.astype(float) - adaptive_sim),
            "adaptive_minus_simulator": paired(adaptive.correct.astype(float) - adaptive_means),
            "adaptive_minus_promise": paired(adaptive.correct.astype(float) - adaptive_promise),
            "adaptive_minus_static": paired(adaptive.correct.astype(float) - static.correct),
            "replans": replans, "slowdown": slowdown, "planning_ms": planning_ms,
            "static_profile_ms": 1e3 * full_inference_time(calibrated)}


def loads(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``loads`` study: a row per model and load, each printed to stderr as it is done."""
    import torch

    from einet import data

    torch.set_num_threads(1)
    test = data.load("cifar10", SHARED / "cifar10-jpeg.zip", "test")
    images = data.dataset_for("cifar10", test, False).images
    rows = []
    for name in args.models:
        stream = _stream(args, name, test, images)
        for load in args.loads:
            row = {"model": name, "load": load, "samples": args.samples, "dist": args.dist,
                   **_under_load(args, stream, load)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows

def loads_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | load | static | adaptive | static - its simulator | adaptive - its simulator (mean times) | "
             "adaptive - its promise (times' variation) | adaptive - replay of observed times | adaptive - static | "
             "re-plans |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        promise = show(r["adaptive_minus_promise"]) if "adaptive_minus_promise" in r else "-"
        lines.append(f"| {r['model']} | {r['load']} | {r['static']:.2f}% | {r['adaptive']:.2f}% | "
                     f"{show(r['static_minus_simulator'])} | {show(r['adaptive_minus_simulator'])} | {promise} | "
                     f"{show(r['adaptive_minus_replay'])} | {show(r['adaptive_minus_static'])} | {r['replans']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- exit times (simulated)

def _bimodal(horizon: float) -> Distribution:
    """Half the interrupts early (N(0.2 H, 0.05 H)), half late (N(0.8 H, 0.05 H)), as an Empirical."""
    rng = np.random.default_rng(7)
    early, late = rng.normal(0.2 * horizon, 0.05 * horizon, 5000), rng.normal(0.8 * horizon, 0.05 * horizon, 5000)
    return Empirical(np.clip(np.concatenate([early, late]), 0.0, None))


def _stream_scores(policy_at: list[Any], cs: CSProfile, et: ETProfile, truth: list[Distribution],
                   rule: Any) -> np.ndarray:
    """Each sample's exact expected accuracy under its true distribution, with the policy it ran."""
    scores = np.zeros(cs.num_samples)
    for k in range(cs.num_samples):
        one = cs.subset(np.array([k]))
        scores[k] = evaluate(policy_at[k], one, et, truth[k], draws=1, rule=rule).per_sample_expected[0]
    return scores


def exit_times(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.models:
        folder = FIXTURES / name
        holdout, cs = CSProfile.load(folder / "cs-holdout.npz"), CSProfile.load(folder / "cs-test.npz")
        native, rule = load_native_predictor(folder / MODELS[name])
        et = ETRecord.load(folder / "et.npz").profile
        horizon = full_inference_time(et)
        policy_for = replanning(holdout, rule, native)
        prior = relative_distribution("uniform", horizon)
        normal = relative_distribution("normal", horizon)
        scenarios = {"normal": (normal, normal, 0), "exponential": ((e := relative_distribution("exponential",
                     horizon)), e, 0), "bimodal": ((b := _bimodal(horizon)), b, 0),
                     "uniform, then normal": (prior, normal, args.switch_at)}
        for scenario, (before, after, switch) in scenarios.items():
            count = switch + args.learn + args.scored
            order = np.random.default_rng(3).choice(cs.num_samples, count, replace=cs.num_samples < count)
            stream = cs.subset(order)
            truth = [before if k < switch else after for k in range(count)]
            taus = np.array([sample_exit_times(truth[k], (1,), np.random.default_rng(10_000 + k))[0]
                             for k in range(count)])
            adaptation = Adaptation(policy_for, et, prior, horizon, learn_blocks=False, background=False)
            oracle = {id(d): policy_for(et, d) for d in (before, after)}
            static = policy_for(et, prior)
            adaptive_at, oracle_at = [], []
            for k in range(count):
                policy = adaptation.policy
                adaptive_at.append(policy)
                oracle_at.append(oracle[id(truth[k])])
                trace = replay(policy, stream.subset(np.array([k])), et, rule)
                ran = trace.exits[0][trace.exits[0] >= 0]
                finished = float(et.conv.sum() + et.branch[ran].sum())
                adaptation.record([], min(taus[k], finished), bool(taus[k] < finished))
                if adaptation.pending():
                    adaptation.update()
            scored = np.arange(switch + args.learn, count)
            part = stream.subset(scored)
            at = [truth[k] for k in scored]
            adaptive = _stream_scores([adaptive_at[k] for k in scored], part, et, at, rule)
            best = _stream_scores([oracle_at[k] for k in scored], part, et, at, rule)
            fixed = _stream_scores([static] * len(scored), part, et, at, rule)
            row = {"model": name, "true": scenario, "learnt_from": args.learn, "scored": len(scored),
                   "oracle": 100 * float(best.mean()), "adaptive_minus_oracle": paired(adaptive - best),
                   "static_minus_oracle": paired(fixed - best), "replans": adaptation.replans}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def exit_times_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | true exit times (assumed: uniform) | oracle | adaptive - oracle | static - oracle | re-plans |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['true']} | {r['oracle']:.2f}% | {show(r['adaptive_minus_oracle'])} | "
                     f"{show(r['static_minus_oracle'])} | {r['replans']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=["loads", "exit-times"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--samples", type=int, default=2000, help="loads: images per cell")
    parser.add_argument("--loads", nargs="+", default=["idle", "steady", "switching", "slowed"],
                        choices=["idle", "steady", "switching", "slowed"])
    parser.add_argument("--period", type=float, default=1.5, help="loads: seconds between burner switches")
    parser.add_argument("--dist", default="normal", choices=["uniform", "normal"], help="loads: deadlines")
    parser.add_argument("--repeats", type=int, default=300, help="loads: ET-profile repeats")
    parser.add_argument("--warmup", type=int, default=100, help="loads: uninterrupted runs before the stream")
    parser.add_argument("--learn", type=int, default=500, help="exit-times: samples before scoring")
    parser.add_argument("--scored", type=int, default=1500, help="exit-times: samples scored")
    parser.add_argument("--switch-at", type=int, default=1000, help="exit-times: sample of the switch")
    parser.add_argument("--inline", action="store_true", help="loads: both runtimes inline (the caller's thread)")
    parser.add_argument("--out", type=Path, help="write OUT/<study>.md and .json (loads-inline with --inline)")
    args = parser.parse_args(argv)
    if args.study == "loads" and not (SHARED / "cifar10-jpeg.zip").exists():
        print("needs ../shared/data/cifar10-jpeg.zip", file=sys.stderr)
        return 2
    rows = loads(args) if args.study == "loads" else exit_times(args)
    table = loads_table(rows) if args.study == "loads" else exit_times_table(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"{args.study}-inline" if args.inline else args.study
        (args.out / f"{name}.md").write_text(table)
        (args.out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
