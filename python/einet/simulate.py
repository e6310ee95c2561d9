"""Trace-driven evaluation of exit policies, and the report tables and plots (DESIGN.md section 8).

For each test sample a policy is replayed on the sample's CS-profile row and
the ET-profile: that gives the times at which its branches finish. For each of
M draws of the forced-exit time tau, the sample counts as right when the answer
held at tau is right (no answer yet: wrong). Overall accuracy is the mean, with
a 95% confidence interval over samples. The exact expectation (integrating F
instead of drawing tau) is reported beside it. Numpy and the native planner only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .baselines import Policy, single_exit, standard_policies
from .planner import Deterministic, Distribution, Empirical, ETProfile, Exponential, NativePredictor, Normal, Uniform
from .profiling import CSProfile


def full_inference_time(et: ETProfile) -> float:
    """The multi-exit network's full inference: every block and every branch (static 100%).
    Exit-time distributions are expressed relative to it, so a policy that skips branches can
    reach the last exit inside the horizon, and the single-exit model finishes at
    (sum conv + last branch) / total of it."""
    return et.total()


def relative_distribution(kind: str, full_time: float, scale: float = 1.0) -> Distribution:
    """Exit time relative to the full inference time T: uniform on [0, sT], normal N(sT/2, sT/4)
    truncated at 0, exponential with mean sT/2."""
    if not full_time > 0 or not scale > 0:
        raise ValueError(f"full_time and scale must be > 0, got {full_time} and {scale}")
    horizon = scale * full_time
    if kind == "uniform":
        return Uniform(0.0, horizon)
    if kind == "normal":
        return Normal(horizon / 2, horizon / 4)
    if kind == "exponential":
        return Exponential(2.0 / horizon)
    raise ValueError(f"unknown distribution kind {kind!r}: expected uniform, normal or exponential")


def sample_exit_times(dist: Distribution, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draws of tau from any of einet's distributions."""
    if isinstance(dist, Uniform):
        return rng.uniform(dist.low, dist.high, size)
    if isinstance(dist, Normal):
        draws = rng.normal(dist.mean, dist.std, size)
        while (negative := draws < 0).any():  # truncated at 0: redraw the rejected ones
            draws[negative] = rng.normal(dist.mean, dist.std, int(negative.sum()))
        return draws
    if isinstance(dist, Exponential):
        return rng.exponential(1.0 / dist.rate, size)
    if isinstance(dist, Empirical):
        return rng.choice(dist.samples, size)
    if isinstance(dist, Deterministic):
        return np.full(size, dist.deadline)
    raise TypeError(f"unknown distribution {dist!r}")


@dataclass(frozen=True)
class Trace:
    """When each sample's branches finished: times [S, N] (inf after the last), exits [S, N] (-1 after)."""

    times: np.ndarray
    exits: np.ndarray


def replay(policy: Policy, cs: CSProfile, et: ETProfile) -> Trace:
    """Run `policy` on every sample of `cs` with the ET-profile's block times."""
    if cs.num_exits != et.num_blocks:
        raise ValueError(f"the CS-profile has {cs.num_exits} exits but the ET-profile {et.num_blocks} blocks")
    s_count, n = cs.confidence.shape
    times = np.full((s_count, n), np.inf)
    exits = np.full((s_count, n), -1, dtype=np.int64)
    conv, branch = et.conv.tolist(), et.branch.tolist()
    confidence = cs.confidence.astype(np.float64)
    for s in range(s_count):
        policy.begin(cs.correct[s] if policy.needs_oracle else None)
        t, q = 0.0, 0
        row = confidence[s].tolist()
        for i in range(n):
            t += conv[i]
            if policy.run_branch(i, t):
                t += branch[i]
                times[s, q], exits[s, q] = t, i
                q += 1
                if policy.observe(i, row[i], t):
                    break
    return Trace(times, exits)


def held_correctness(trace: Trace, cs: CSProfile, rule: str = "latest") -> np.ndarray:
    """[S, N + 1]: whether the answer held after the q-th finished branch is right (column 0: none held)."""
    if rule not in ("latest", "best"):
        raise ValueError(f"unknown rule {rule!r}: expected 'latest' or 'best'")
    s_count, n = trace.exits.shape
    finished = trace.exits >= 0
    index = np.where(finished, trace.exits, 0)
    correct = np.take_along_axis(cs.correct, index, 1) & finished
    held = np.zeros((s_count, n + 1), dtype=bool)
    if rule == "latest":
        held[:, 1:] = correct
        return held
    confidence = np.where(finished, np.take_along_axis(cs.confidence, index, 1), -1.0)
    best_so_far = np.maximum.accumulate(confidence, axis=1)
    argbest = np.zeros((s_count, n), dtype=np.int64)
    for q in range(1, n):  # the position of the running maximum (first one on ties)
        argbest[:, q] = np.where(confidence[:, q] > best_so_far[:, q - 1], q, argbest[:, q - 1])
    held[:, 1:] = np.take_along_axis(correct, argbest, 1) & (best_so_far >= 0)
    return held


@dataclass(frozen=True)
class PolicyResult:
    """One policy's accuracy under one exit-time distribution."""

    name: str
    accuracy: float  # mean over samples and draws of tau
    ci95: float  # half-width of the 95% interval over samples
    expected: float  # exact: tau integrated out with F
    mean_branches: float  # branches run per sample (until stopped)
    per_sample: np.ndarray  # each sample's accuracy over its draws


def evaluate(policy: Policy, cs: CSProfile, et: ETProfile, dist: Distribution, draws: int = 100, seed: int = 0,
             rule: str = "latest") -> PolicyResult:
    """Replay `policy` and score it under `draws` exit times per sample."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    trace = replay(policy, cs, et)
    held = held_correctness(trace, cs, rule)
    taus = sample_exit_times(dist, (cs.num_samples, draws), np.random.default_rng(seed))
    finished_by = (trace.times[:, None, :] <= taus[:, :, None]).sum(-1)  # [S, M]: branches done at tau
    right = np.take_along_axis(held, finished_by, 1)
    per_sample = right.mean(1)
    cdf = np.where(np.isfinite(trace.times), dist.cdf(trace.times), 1.0)  # no more branches: all mass is in
    mass = np.diff(np.concatenate([np.zeros((cs.num_samples, 1)), cdf, np.ones((cs.num_samples, 1))], 1), axis=1)
    expected = float((mass * held).sum(1).mean())
    ci = 1.96 * float(per_sample.std(ddof=1)) / math.sqrt(cs.num_samples) if cs.num_samples > 1 else math.nan
    return PolicyResult(policy.name, float(per_sample.mean()), ci, expected,
                        float((trace.exits >= 0).sum(1).mean()), per_sample)


def evaluate_all(et: ETProfile, dist: Distribution, predictor: NativePredictor, holdout: CSProfile, test: CSProfile,
                 rule: str = "latest", draws: int = 100,
                 compressed: tuple[ETProfile, CSProfile] | None = None) -> list[PolicyResult]:
    """Every policy of the paper's comparison on `test` (the statistics plan from `holdout`), plus, when
    its (ET, CS) profiles are given, the compressed single-exit model: the same network at half width."""
    results = [evaluate(p, test, et, dist, draws=draws, rule=rule)
               for p in standard_policies(et, dist, predictor, holdout.accuracy_per_exit(), rule)]
    if compressed is not None:
        small_et, small_cs = compressed
        policy = single_exit(small_et.num_blocks, name="compressed single-exit")
        results.append(evaluate(policy, small_cs, small_et, dist, draws=draws, rule=rule))
    return results


def compare(results: Sequence[PolicyResult], reference: str = "EINet", floor: str = "statistics",
            ceiling: str = "clairvoyant") -> list[dict[str, object]]:
    """Rows in the paper's form: each policy's accuracy, its difference from `reference`, and the
    share of the gap between the `floor` (statistics) plan and the `ceiling` it closes.

    Differences and gap shares use the exact expectations: the same quantity as the drawn
    accuracy without its sampling noise, so a difference of 0.1 pp is not a coin toss."""
    by_name = {r.name: r for r in results}
    ref = by_name.get(reference)
    low, high = by_name.get(floor), by_name.get(ceiling)
    rows = []
    for r in results:
        gap = None
        if low and high and high.expected > low.expected:
            gap = (r.expected - low.expected) / (high.expected - low.expected)
        rows.append({"policy": r.name, "accuracy": r.accuracy, "ci95": r.ci95, "expected": r.expected,
                     "einet_minus_policy": (ref.expected - r.expected) if ref else None,
                     "gap_closed": gap, "branches": r.mean_branches})
    return rows


def markdown_table(rows: Sequence[dict[str, object]], title: str = "") -> str:
    def pct(value: object, signed: bool = False) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * float(value):+.2f}" if signed else f"{100 * float(value):.2f}"

    lines = [f"**{title}**", ""] if title else []
    lines += ["| policy | accuracy (%) | 95% CI | exact (%) | EINet - policy (pp, exact) | gap closed | branches |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['policy']} | {pct(row['accuracy'])} | ±{pct(row['ci95'])} | {pct(row['expected'])} "
                     f"| {pct(row['einet_minus_policy'], signed=True)} | {pct(row['gap_closed'])} "
                     f"| {float(row['branches']):.2f} |")  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[dict[str, object]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def accuracy_curves(policies: Callable[[Distribution], Sequence[Policy]], cs: CSProfile, et: ETProfile,
                    kind: str, scales: Sequence[float], draws: int = 20) -> dict[str, list[tuple[float, float]]]:
    """Accuracy against the mean exit time: for each scale, the policies built for that distribution."""
    full = full_inference_time(et)
    curves: dict[str, list[tuple[float, float]]] = {}
    for scale in scales:
        dist = relative_distribution(kind, full, scale)
        mean_tau = float(sample_exit_times(dist, (20000,), np.random.default_rng(1)).mean())
        for policy in policies(dist):
            result = evaluate(policy, cs, et, dist, draws=draws)
            curves.setdefault(result.name, []).append((mean_tau / full, result.expected))
    return curves


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: str, title: str) -> None:
    """Accuracy vs mean exit time, one line per policy (needs matplotlib: the `plot` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab20").colors
    for k, (name, points) in enumerate(curves.items()):
        xs, ys = zip(*points)
        style = {"color": colours[(2 * k) % 20], "linewidth": 1.2, "linestyle": "-"}
        if name == "EINet":
            style.update(color="black", linewidth=2.5)
        elif name == "clairvoyant":
            style.update(color="grey", linestyle="--")
        ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=name, **style)
    ax.set_xlabel("mean exit time / full inference time")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
