"""Two multi-exit networks under the same real interrupts, side by side (the light-exit lever, for real).

The simulator says light exits (`einet train --exit-head light`) beat the paper's branches at the
same exit times. This checks it with the runtime: each network runs the same test images, each
image interrupted at the same deadline in seconds (drawn relative to the *reference* network's
full inference time, timed back to back with the candidate's on this machine):

- the reference runs the paper's method: its predictor's EINet, rule ``latest``;
- the candidate runs its deployed configuration, chosen on its held-out split (``einet.evaluation.select``).

Printed: each network's real-time accuracy and its difference from what the simulator predicts
at the same deadlines, and candidate minus reference, paired over the images, with the 95%
interval. Both runs share the machine's state: run it on an idle machine.

    python experiments/levers/realtime_levers.py --reference runs/vgg16_fine_w025_joint.pt \
        --reference-fixture benchmarks/fixtures/vgg16_fine_w025_cpu_joint \
        --candidate benchmarks/fixtures/vgg16_fine_w025_cpu_light/model.pt \
        --candidate-fixture benchmarks/fixtures/vgg16_fine_w025_cpu_light --data ../shared/data/cifar10-jpeg.zip

(`--candidate-second-look flip` with the `vgg16_fine_w025_cpu_light_second_look` fixture: the light
network with its second look; add `--candidate-second-look-depth 10` with the
`vgg16_fine_w025_cpu_light_second_look_d10` fixture for the second look through 10 blocks.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from einet import data
from einet.distributions import full_inference_time, relative_distribution, sample_exit_times
from einet.evaluation.select import deployed_policy, select
from einet.evaluation.simulate import ci95_half_width
from einet.formats.checkpoint import load_checkpoint
from einet.formats.profiles import CSProfile
from einet.models import MultiExitNetwork
from einet.models.second_look import with_second_look
from einet.planner import Distribution, ETProfile
from einet.policies import EINet, Policy
from einet.predictor import load_predictor
from einet.profiling import profile_et
from einet.rules import AnswerRule
from einet.runtime import ElasticRuntime
from einet.runtime.realtime import check_against_simulator


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line, checked; the parser too, to refuse what only loading the networks reveals."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="checkpoint of the paper's network")
    parser.add_argument("--reference-fixture", type=Path, required=True, help="its profiles and predictor.npz")
    parser.add_argument("--candidate", type=Path, required=True, help="checkpoint of the other network")
    parser.add_argument("--candidate-fixture", type=Path, required=True, help="its profiles")
    parser.add_argument("--candidate-second-look", choices=["flip"],
                        help="run the candidate with a second look (its fixture profiled with `--second-look`)")
    parser.add_argument("--candidate-second-look-depth", type=int, metavar="D",
                        help="blocks per pass of that second look (its fixture profiled with `--second-look-depth D`)")
    parser.add_argument("--data", required=True, help="CIFAR-10 (the test split is used)")
    parser.add_argument("--dist", default="normal", choices=["uniform", "normal"])
    parser.add_argument("--samples", type=int, default=10000, help="test images (the first ones)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interrupts per image, each at its own deadline (the paired interval is over images)")
    parser.add_argument("--repeats", type=int, default=400, help="timed runs per block of the ET-profiles")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args()
    if args.samples < 1 or args.rounds < 1:
        parser.error(f"--samples and --rounds must be >= 1, got {args.samples} and {args.rounds}")
    if args.candidate_second_look_depth is not None and not args.candidate_second_look:
        parser.error("--candidate-second-look-depth needs --candidate-second-look")
    return parser, args


def load_networks(parser: argparse.ArgumentParser,
                  args: argparse.Namespace) -> tuple[dict[str, MultiExitNetwork], dict[str, Path]]:
    """Both networks as run here (the candidate with its second look) and their fixtures, which must match them."""
    candidate = load_checkpoint(args.candidate)[0]
    if args.candidate_second_look:
        try:
            candidate = with_second_look(candidate, args.candidate_second_look, args.candidate_second_look_depth)
        except ValueError as error:
            parser.error(f"--candidate-second-look-depth: {error}")
    models = {"reference": load_checkpoint(args.reference)[0].eval(), "candidate": candidate.eval()}
    fixtures = {"reference": args.reference_fixture, "candidate": args.candidate_fixture}
    for name, model in models.items():
        profiled = CSProfile.load(fixtures[name] / "cs-test.npz").num_exits
        if profiled != model.num_exits:
            parser.error(f"{fixtures[name]} has {profiled} exits, the {name} as run here {model.num_exits}: "
                         "profile it the way it runs")
    return models, fixtures


def configuration(name: str, folder: Path, et: ETProfile, dist: Distribution, kind: str,
                  full_time: float) -> tuple[Callable[[ETProfile], Policy], AnswerRule, str]:
    """What a network runs (its policy for a given ET-profile, its rule, a label): the paper's method for the
    reference; for the candidate, what its held-out data picks at the reference's deadlines."""
    if name == "reference":
        native, rule = load_predictor(folder / "predictor.npz").to_native(), AnswerRule("latest")

        def paper(profile: ETProfile) -> Policy:
            return EINet(native, profile, dist, rule)
        return paper, rule, "paper's method (EINet (paper), rule latest)"
    holdout = CSProfile.load(folder / "cs-holdout.npz")
    deployment, torch_predictor = select(et, holdout, kinds=[kind], scale=full_time / full_inference_time(et),
                                         progress=False)
    native = torch_predictor.to_native()

    def deployed(profile: ETProfile) -> Policy:
        return deployed_policy(deployment, profile, dist, native)
    return deployed, deployment.rule, f"deployed ({deployment.policy}, rule {deployment.rule.label()})"


def main() -> None:
    """Runs both networks under the same deadlines and prints each one's figures and their paired difference."""
    parser, args = parse_args()
    torch.set_num_threads(1)
    test = data.load("cifar10", args.data, "test")
    count = min(args.samples, len(test.labels))
    order = np.tile(np.arange(count), args.rounds)  # every image `rounds` times, each with its own deadline
    images = data.dataset_for("cifar10", test, False).images[:count][order]
    models, fixtures = load_networks(parser, args)
    examples = images[np.random.default_rng(0).permutation(count)[:200]]
    ets = {name: profile_et(model, (3, 32, 32), repeats=args.repeats, progress=False, samples=examples).profile
           for name, model in models.items()}  # back to back, on the same inputs
    full_time = full_inference_time(ets["reference"])
    dist = relative_distribution(args.dist, full_time)
    deadlines = sample_exit_times(dist, (len(images),), np.random.default_rng(1))
    figures: dict[str, dict[str, object]] = {}
    correct = {}
    for name, model in models.items():
        folder, et = fixtures[name], ets[name]
        cs = CSProfile.load(folder / "cs-test.npz").subset(order)
        if not np.array_equal(cs.labels, test.labels[order]):
            raise ValueError(f"{folder}/cs-test.npz is not the CIFAR-10 test split in order")
        policy_for, rule, label = configuration(name, folder, et, dist, args.dist, full_time)
        with ElasticRuntime(model, policy_for(et), rule=rule) as runtime:
            check = check_against_simulator(runtime, policy_for, et, cs, images, deadlines, warmup=300)
        correct[name] = check.report.correct.astype(np.float64).reshape(args.rounds, count).mean(0)  # per image
        figures[name] = {"configuration": label, "full_inference_ms": 1e3 * full_inference_time(et),
                         "planned_with_ms": 1e3 * full_inference_time(check.et),
                         "runtime_accuracy": check.report.accuracy,
                         "runtime_minus_simulator_pp": 100 * check.difference,
                         "runtime_minus_simulator_ci95_pp": 100 * check.ci95,
                         "planning_share": check.report.planning_share}
        print(f"{name}: {label}: real-time accuracy {100 * check.report.accuracy:.2f}%, runtime minus simulator "
              f"{100 * check.difference:+.2f} ± {100 * check.ci95:.2f} pp, planner share "
              f"{100 * check.report.planning_share:.2f}%, full inference {figures[name]['full_inference_ms']:.3f} ms")
    difference = correct["candidate"] - correct["reference"]
    figures["candidate_minus_reference"] = {"pp": 100 * float(difference.mean()),
                                            "ci95_pp": 100 * ci95_half_width(difference),
                                            "images": count, "rounds": args.rounds, "dist": args.dist}
    print(f"candidate minus reference, real time, {args.dist} exit time, {count} images x {args.rounds} interrupts: "
          f"{100 * difference.mean():+.2f} ± {100 * ci95_half_width(difference):.2f} pp (paired)")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")

if __name__ == "__main__":
    main()
