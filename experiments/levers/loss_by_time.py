"""Where the expected accuracy is lost: a fixed plan's curve, interval by interval.

For each fixture's statistics plan (fitted on its held-out split, rule ``latest``, under the
exit-time distribution of a reference network in seconds, as experiments/levers/anytime_levers.py scores
twins), each interval between two answers: its share of the exit-time mass, the test accuracy
held during it, and what it costs against holding the final exit's accuracy all along. The costs
sum to the gap between that accuracy and the plan's expected accuracy: the table says which part
of the curve a lever must improve, and the most it can give. `--plot` draws the held accuracy of
every fixture over time above the exit-time density (needs matplotlib, the `plot` extra).

    python experiments/levers/loss_by_time.py benchmarks/fixtures/vgg16_fine_w025_cpu_joint \
        benchmarks/fixtures/vgg16_fine_w025_cpu_light --dist normal --plot docs/figures/loss_by_time_vgg16_normal.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from einet.distributions import RELATIVE_KINDS, full_inference_time, relative_distribution
from einet.evaluation.simulate import replay
from einet.formats.profiles import CSProfile, ETRecord
from einet.planner import Distribution
from einet.policies import statistics_plan


def held_curve(folder: Path, dist: Distribution) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The plan's exits (0-based), when each answer lands (seconds), its test accuracy, and the final
    exit's test accuracy."""
    et = ETRecord.load(folder / "et.npz").profile
    holdout, test = (CSProfile.load(folder / f"cs-{split}.npz") for split in ("holdout", "test"))
    trace = replay(statistics_plan(holdout, et, dist), test.subset(np.arange(1)), et)  # one plan: the same for all
    ran = trace.exits[0] >= 0
    plan, lands = trace.exits[0][ran], trace.times[0][ran]
    accuracy = test.accuracy_per_exit()
    return plan, lands, accuracy[plan], float(accuracy[-1])


def account(lands: np.ndarray, accuracy: np.ndarray, dist: Distribution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The intervals between answers (edges, seconds), each one's exit-time mass, and the accuracy held in it
    (nothing before the first answer): the expected accuracy is sum(mass * held)."""
    edges = np.array([0.0, *lands, np.inf])
    mass = np.diff([float(dist.cdf(t)) if np.isfinite(t) else 1.0 for t in edges])
    return edges, mass, np.concatenate([[0.0], accuracy])


def table(name: str, plan: np.ndarray, lands: np.ndarray, accuracy: np.ndarray, final: float,
          dist: Distribution) -> list[str]:
    edges, mass, held = account(lands, accuracy, dist)
    lines = [f"{name}: statistics plan runs exits {(plan + 1).tolist()}; cost against the final exit's "
             f"{100 * final:.1f}%", "", "| from (ms) | to (ms) | answer held | mass (%) | accuracy (%) | cost (pp) |",
             "|---:|---:|---|---:|---:|---:|"]
    for k in range(len(held)):
        label = "none" if k == 0 else f"exit {plan[k - 1] + 1}"
        lines.append(f"| {1e3 * edges[k]:.2f} | {1e3 * edges[k + 1]:.2f} | {label} | {100 * mass[k]:.1f} | "
                     f"{100 * held[k]:.1f} | {100 * mass[k] * (final - held[k]):.2f} |")
    expected = float((mass * held).sum())
    lines += ["", f"expected accuracy {100 * expected:.2f}% = {100 * final:.2f}% - {100 * (final - expected):.2f} pp",
              ""]
    return lines


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], dist: Distribution, horizon: float, title: str,
         path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5.5))
    FigureCanvasAgg(fig)
    ax, density = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    end = 1.05 * horizon
    for name, (lands, accuracy) in curves.items():
        xs = 1e3 * np.array([0.0, *lands, end])
        ys = 100 * np.array([0.0, *accuracy, accuracy[-1]])
        ax.step(xs, ys, where="post", label=name, linewidth=1.5)
    ax.set_ylabel("accuracy held (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ts = np.linspace(0.0, end, 400)
    cdf = np.array([float(dist.cdf(t)) for t in ts])
    density.fill_between(1e3 * ts[1:], np.diff(cdf) / np.diff(1e3 * ts), alpha=0.4, step="pre")
    density.set_ylabel("exit-time\ndensity (1/ms)")
    density.set_xlabel("time since the input arrived (ms)")
    density.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixtures", type=Path, nargs="+")
    parser.add_argument("--reference", type=Path, help="the fixture whose full inference sets the exit times "
                                                       "(default: the first)")
    parser.add_argument("--dist", default="normal", choices=list(RELATIVE_KINDS))
    parser.add_argument("--plot", type=Path, help="draw the curves and the exit-time density here (PNG)")
    args = parser.parse_args()
    reference = ETRecord.load((args.reference or args.fixtures[0]) / "et.npz").profile
    horizon = full_inference_time(reference)
    dist = relative_distribution(args.dist, horizon)
    print(f"{args.dist} exit time over {1e3 * horizon:.3f} ms\n")
    curves = {}
    for folder in args.fixtures:
        plan, lands, accuracy, final = held_curve(folder, dist)
        print("\n".join(table(folder.name, plan, lands, accuracy, final, dist)))
        curves[folder.name] = (lands, accuracy)
    if args.plot:
        plot(curves, dist, horizon, f"statistics plans, {args.dist} exit time over {1e3 * horizon:.2f} ms", args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
