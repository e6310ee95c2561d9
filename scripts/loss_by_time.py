"""Where the expected accuracy is lost: the statistics plan's curve, interval by interval.

For a fixture's statistics plan (fitted on its held-out split, rule ``latest``, under the exit-time
distribution of a reference network in seconds, as scripts/anytime_levers.py scores twins), each
interval between two answers: its share of the exit-time mass, the test accuracy held during it,
and what it costs against holding the final exit's accuracy all along. The costs sum to the gap
between that accuracy and the plan's expected accuracy: the table says which part of the curve a
lever must improve, and the most it can give.

    python scripts/loss_by_time.py benchmarks/fixtures/vgg16_fine_w025_cpu_light \
        --reference benchmarks/fixtures/vgg16_fine_w025_cpu_joint --dist normal
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from einet.policies import statistics_plan
from einet.profiling import CSProfile, ETRecord
from einet.simulate import full_inference_time, relative_distribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture", type=Path)
    parser.add_argument("--reference", type=Path, help="the fixture whose full inference sets the exit times "
                                                       "(default: the fixture itself)")
    parser.add_argument("--dist", default="normal", choices=["uniform", "normal", "exponential"])
    args = parser.parse_args()
    et = ETRecord.load(args.fixture / "et.npz").profile
    reference = ETRecord.load((args.reference or args.fixture) / "et.npz").profile
    dist = relative_distribution(args.dist, full_inference_time(reference))
    holdout, test = (CSProfile.load(args.fixture / f"cs-{split}.npz") for split in ("holdout", "test"))
    plan = np.flatnonzero(statistics_plan(holdout, et, dist).mask)
    conv, branch = np.asarray(et.conv), np.asarray(et.branch)
    answers = [float(conv[:i + 1].sum() + branch[plan[plan <= i]].sum()) for i in plan]  # when each answer lands
    accuracy = test.accuracy_per_exit()[plan]
    final = float(test.accuracy_per_exit()[-1])
    edges = np.array([0.0, *answers, np.inf])
    mass = np.diff([float(dist.cdf(t)) if np.isfinite(t) else 1.0 for t in edges])
    held = np.concatenate([[0.0], accuracy])
    print(f"{args.fixture.name}: statistics plan runs exits {(plan + 1).tolist()}; {args.dist} exit time over "
          f"{1e3 * full_inference_time(reference):.3f} ms; cost against the final exit's {100 * final:.1f}%")
    print("| from (ms) | to (ms) | answer held | mass (%) | accuracy (%) | cost (pp) |")
    print("|---:|---:|---|---:|---:|---:|")
    for k in range(len(held)):
        label = "none" if k == 0 else f"exit {plan[k - 1] + 1}"
        print(f"| {1e3 * edges[k]:.2f} | {1e3 * edges[k + 1]:.2f} | {label} | {100 * mass[k]:.1f} | "
              f"{100 * held[k]:.1f} | {100 * mass[k] * (final - held[k]):.2f} |")
    expected = float((mass * held).sum())
    print(f"expected accuracy {100 * expected:.2f}% = {100 * final:.2f}% - {100 * (final - expected):.2f} pp")


if __name__ == "__main__":
    main()
