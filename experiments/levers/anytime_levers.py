"""Where anytime accuracy comes from: every lever as a paired difference on the test split.

For each fixture folder (et.npz, cs-holdout.npz, cs-test.npz with log-probabilities) and each
exit-time distribution, against the paper's method (recipe joint, rule ``latest``, the paper's
EINet with its predictor):

- planning: EINet (the paper's: always re-planned) vs the statistics plan, under each rule
  (einet's default EINet starts from the statistics plan and keeps it unless re-planning
  promises 0.5 pp: see the comparison tables);
- time-zero answer: the held-out split's most frequent class held before the first branch;
- rule ``ensemble``: the running weighted ensemble of finished exits;
- the nearest-neighbour reference: the best a predictor on the richest signals can reach;
- exits free: the statistics plan if every branch took no time, a bound on what cheaper exits
  (such as light ones) can give with the same exit accuracies;
- the deployed configuration, chosen on held-out data only (einet.evaluation.select); a deployed EINet is
  scored paying the planning time the selection charged it, as in the runtime (the paper's EINet
  rows are scored without it, in its favour, and once, rule latest, with it);
- the network to ship among the fixture and its twins, chosen on held-out data as
  ``einet.evaluation.select.select_network`` chooses (the highest held-out score of a deployed configuration);
- the training recipe: the same configuration on a twin fixture trained with another recipe
  (`--twin`), paired over the same test images, under the *same* exit-time distribution in
  seconds (the reference's full inference time, not the twin's: a deadline does not stretch
  because a network got faster or slower). Time both fixtures' ET-profiles side by side.

Everything fitted (predictors, ensemble weights, plans, the time-zero answer, the selection)
sees only the held-out split. Differences are exact over tau, paired over test images, with
their 95% interval; * marks an interval that excludes 0.

    python experiments/levers/anytime_levers.py benchmarks/fixtures/vgg16_fine_w025_cpu_joint \
        --twin benchmarks/fixtures/vgg16_fine_w025_cpu_distill-ensemble \
        benchmarks/fixtures/vgg16_fine_w025_cpu_joint_thumbnail --out experiments/levers/results/vgg16_fine_w025_cpu.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from einet.distributions import full_inference_time, relative_distribution
from einet.evaluation.select import deployed_policy, held_out_score, planned_profile, select
from einet.evaluation.simulate import PolicyResult, charged, evaluate, paired_difference, planning_seconds
from einet.formats.profiles import CSProfile, ETRecord
from einet.planner import ETProfile
from einet.policies import EINet, NearestNeighbours, statistics_plan
from einet.predictor import fit_ensemble_weights, fit_predictor
from einet.rules import AnswerRule, time_zero_answer


def rules_for(holdout: CSProfile) -> dict[str, AnswerRule]:
    weights = fit_ensemble_weights(holdout)
    prior = time_zero_answer(holdout.labels)
    return {"latest": AnswerRule("latest"), "latest + time-zero": AnswerRule("latest", None, *prior),
            "ensemble": AnswerRule("ensemble", weights),
            "ensemble + time-zero": AnswerRule("ensemble", weights, *prior)}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def configurations(folder: Path, kinds: list[str], knn_samples: int, epochs: int,
                   full_time: float | None = None) -> tuple[dict, dict]:
    """{(kind, label): PolicyResult} for every configuration of one fixture, and what was chosen.
    The nearest-neighbour reference runs on the first `knn_samples` test images (0: not at all),
    paired there with the paper's method on the same images. Exit times are relative to
    `full_time` (seconds; default: this fixture's own full inference time)."""
    et = ETRecord.load(folder / "et.npz").profile
    scale = 1.0 if full_time is None else full_time / full_inference_time(et)
    holdout, test = CSProfile.load(folder / "cs-holdout.npz"), CSProfile.load(folder / "cs-test.npz")
    log(f"{folder.name}: fitting rules and predictors on the held-out split")
    rules = rules_for(holdout)
    predictors = {name: fit_predictor(holdout, "correctness", epochs=epochs, rule=rule, progress=False)[0].to_native()
                  for name, rule in rules.items()}
    # richer signals for the predictor (rule latest): what it reads per observed exit instead of the confidence
    by_signal = {signal: fit_predictor(holdout, "correctness", epochs=epochs, progress=False,
                                       signal=signal)[0].to_native() for signal in ("entropy", "margin", "agreement")}
    log(f"{folder.name}: selecting on the held-out split, for each distribution")
    deployed = {kind: select(et, holdout, kinds=[kind], scale=scale, predictor_epochs=epochs, progress=False)
                for kind in kinds}
    subset = test.subset(np.arange(min(knn_samples, test.num_samples)))
    results: dict[tuple[str, str], PolicyResult] = {}
    for kind in kinds:
        log(f"{folder.name}: evaluating under {kind} exit times")
        dist = relative_distribution(kind, full_inference_time(et), scale)
        for name, rule in rules.items():
            results[kind, f"statistics | {name}"] = evaluate(statistics_plan(holdout, et, dist, rule), test, et, dist,
                                                             draws=1, rule=rule)
            results[kind, f"EINet (paper) | {name}"] = evaluate(EINet(predictors[name], et, dist, rule), test, et,
                                                                dist, draws=1, rule=rule)
            if name == "latest":
                # a bound: what no cut in exit cost can beat, with these exits' accuracies
                free = ETProfile(et.conv, np.zeros(et.num_blocks))
                results[kind, "statistics, exits free (bound) | latest"] = evaluate(
                    statistics_plan(holdout, free, dist), test, free, dist, draws=1)
                # the paper's method as the runtime runs it: paying for its planning
                paying = charged(et, planning_seconds(EINet(predictors[name], et, dist, rule), holdout, et, rule))
                results[kind, "EINet (paper), paying for its planning | latest"] = evaluate(
                    EINet(predictors[name], paying, dist, rule), test, paying, dist, draws=1, rule=rule)
            if knn_samples and name in ("latest", "ensemble + time-zero"):
                for label, policy in ((f"statistics | {name}", statistics_plan(holdout, et, dist, rule)),
                                      (f"EINet (paper) | {name}", EINet(predictors[name], et, dist, rule)),
                                      (f"nearest-neighbour reference | {name}", NearestNeighbours(holdout, et, dist,
                                                                                                 rule))):
                    results[kind, f"[{subset.num_samples} images] {label}"] = evaluate(policy, subset, et, dist,
                                                                                        draws=1, rule=rule)
        for signal, native in by_signal.items():
            results[kind, f"EINet (paper, {signal}) | latest"] = evaluate(
                EINet(native, et, dist, signal=signal), test, et, dist, draws=1)
        # what a user would ship for this distribution, chosen on held-out data
        deployment, predictor = deployed[kind]
        policy = deployed_policy(deployment, et, dist, predictor.to_native())  # an EINet pays for its planning
        results[kind, "deployed"] = evaluate(policy, test, planned_profile(deployment, et), dist, draws=1,
                                             rule=deployment.rule)
    chosen = {kind: {"policy": d.policy, "rule": d.rule.label(), "held_out": held_out_score(d),
                     "validation_top3": dict(list(d.validation.items())[:3])} for kind, (d, _) in deployed.items()}
    return results, chosen


def test_images(folder: Path) -> int:
    return CSProfile.load(folder / "cs-test.npz").num_samples


def parse_args() -> argparse.Namespace:
    """The command line: the fixture, its twins, the distributions, the fits' sizes and where to write."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--twin", type=Path, nargs="*", default=[],
                        help="the same model trained with another recipe, or with a thumbnail exit (same test images)")
    parser.add_argument("--dist", nargs="+", default=["uniform", "normal"])
    parser.add_argument("--knn-samples", type=int, default=2000,
                        help="test images for the (slower) nearest-neighbour reference; 0 skips it")
    parser.add_argument("--epochs", type=int, default=40, help="predictor training epochs")
    parser.add_argument("--out", type=Path, help="write the markdown table here (and the raw numbers as .json)")
    return parser.parse_args()


def run_all(args: argparse.Namespace) -> tuple[str, dict[str, tuple[dict, dict]], float]:
    """Every configuration of the fixture and of each twin, by recipe (the twins under the fixture's exit times in
    seconds): the fixture's recipe, the runs and the fixture's full inference time."""
    recipe = CSProfile.load(args.fixture / "cs-test.npz").meta.get("recipe", "joint")
    runs = {recipe: configurations(args.fixture, args.dist, args.knn_samples, args.epochs)}
    full_time = full_inference_time(ETRecord.load(args.fixture / "et.npz").profile)
    for twin in args.twin:
        twin_recipe = CSProfile.load(twin / "cs-test.npz").meta.get("recipe", twin.name)
        if twin_recipe in runs:
            raise SystemExit(f"{twin} has the same recipe name as another fixture ({twin_recipe!r}): "
                             "the table could not tell them apart")
        runs[twin_recipe] = configurations(twin, args.dist, args.knn_samples, args.epochs, full_time)
    return recipe, runs, full_time


def paper(results: dict, kind: str, label: str) -> PolicyResult:
    """The paper's method on the same images as `label`."""
    prefix = label[:label.index("]") + 2] if label.startswith("[") else ""
    return results[kind, f"{prefix}EINet (paper) | latest"]


def comparison_table(args: argparse.Namespace, recipe: str, runs: dict[str, tuple[dict, dict]],
                     full_time: float) -> tuple[list[str], dict]:
    """The main table: every configuration of every network minus the fixture's paper's method, and the network
    chosen on held-out data; its lines and the raw numbers."""
    results = runs[recipe][0]
    lines = [f"Fixture `{args.fixture.name}`" + "".join(f", twin `{twin.name}`" for twin in args.twin)
             + f"; exact expected accuracy on {test_images(args.fixture)} test images (rows marked [n images]: the "
             "first n, paired with the paper's method on those); "
             f"difference from the paper's method ({recipe}, rule latest, EINet (paper)), paired, pp ± 95% CI "
             f"(* excludes 0). Exit times relative to `{args.fixture.name}`'s full inference time "
             f"({1e3 * full_time:.3f} ms), for the twins too. `exits free (bound)`: the statistics plan, rule latest, "
             "with every branch (the final classifier's too) taking no time.", ""]
    columns = " | ".join(f"{kind} (%) | {kind}: minus paper (pp)" for kind in args.dist)
    lines.append(f"| recipe | configuration | rule | {columns} |")
    lines.append("|---|---|---|" + "---:|---:|" * len(args.dist))
    raw = {}
    for name, (res, _) in runs.items():
        labels = sorted({label for _, label in res}, key=lambda label: (label == "deployed", label))
        for label in labels:
            cells = []
            for kind in args.dist:
                r = res[kind, label]
                difference = paired_difference(r, paper(results, kind, label))
                cells += [f"{100 * r.expected:.2f}", str(difference)]
                raw[f"{name} | {label} | {kind}"] = {"expected": r.expected, **vars(difference)}
            configuration, _, rule = label.partition(" | ")  # "deployed": its rule is in the notes below
            lines.append(f"| {name} | {configuration} | {rule or 'as chosen'} | " + " | ".join(cells) + " |")
    if len(runs) > 1:  # the network to ship is chosen on held-out data too (select_network)
        picked = {kind: max(runs, key=lambda name: runs[name][1][kind]["held_out"]) for kind in args.dist}
        cells = []
        for kind in args.dist:
            r = runs[picked[kind]][0][kind, "deployed"]
            difference = paired_difference(r, paper(results, kind, "deployed"))
            cells += [f"{100 * r.expected:.2f}", str(difference)]
            raw[f"network chosen on held-out data | {kind}"] = {"network": picked[kind], "expected": r.expected,
                                                                 **vars(difference)}
        networks = "; ".join(f"{kind}: {picked[kind]}" for kind in args.dist)
        lines.append(f"| chosen on held-out data ({networks}) | deployed | as chosen | " + " | ".join(cells) + " |")
    return lines, raw


def planner_table(args: argparse.Namespace, runs: dict[str, tuple[dict, dict]]) -> list[str]:
    """The second table: each per-sample planner minus the statistics plan, same rule, same images."""
    lines = ["", "Per-sample planning against the statistics plan (same rule, same images), pp ± 95% CI:", "",
             "| recipe | rule | planner | " + " | ".join(args.dist) + " |", "|---|---|---|" + "---:|" * len(args.dist)]
    for name, (res, _) in runs.items():
        for label in sorted({label for _, label in res if "statistics | " in label}):
            prefix, rule = label.split("statistics | ")
            for planner in ("EINet (paper)", "EINet (paper, entropy)", "EINet (paper, margin)",
                            "EINet (paper, agreement)", "nearest-neighbour reference"):
                if all((kind, f"{prefix}{planner} | {rule}") in res for kind in args.dist):
                    cells = [str(paired_difference(res[kind, f"{prefix}{planner} | {rule}"], res[kind, label]))
                             for kind in args.dist]
                    lines.append(f"| {name} | {rule} | {prefix}{planner} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def deployed_notes(runs: dict[str, tuple[dict, dict]]) -> list[str]:
    """A line per network and distribution: what was deployed, and the held-out scores it was chosen by."""
    return [f"Deployed for `{name}` under {kind} exit times (chosen on held-out data): "
            f"{deployed['policy']}, rule {deployed['rule']}; held-out scores of the top candidates: "
            + ", ".join(f"{k} {100 * v:.2f}%" for k, v in deployed["validation_top3"].items()) + "."
            for name, (_, chosen) in runs.items() for kind, deployed in chosen.items()]


def main() -> None:
    """Scores every configuration, prints the tables and writes them (and the raw numbers) to --out."""
    args = parse_args()
    started = time.perf_counter()
    recipe, runs, full_time = run_all(args)
    lines, raw = comparison_table(args, recipe, runs, full_time)
    lines += planner_table(args, runs) + deployed_notes(runs)
    lines.append(f"\n{time.perf_counter() - started:.0f} s.")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")

if __name__ == "__main__":
    np.seterr(all="ignore")
    torch.set_num_threads(1)  # small fits: more threads only contend
    main()
