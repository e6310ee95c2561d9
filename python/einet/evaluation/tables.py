"""Tables and plots of simulated results: the comparison as markdown or CSV, the paper's table over
several networks (with each one's compressed twin), accuracy against the exit-time horizon.
Numpy only; plots need the ``einet[plot]`` extra."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..distributions import full_inference_time, relative_distribution, sample_exit_times
from ..formats.profiles import CSProfile
from ..planner import Distribution, ETProfile
from ..policies import Policy
from ..rules import AnswerRule
from .simulate import PolicyResult, evaluate, paired_difference

K = TypeVar("K")


def network_identity(meta: Mapping[str, Any]) -> tuple[str | None, float]:
    """A profile's zoo model and width: from its metadata, or (format-1 profiles) its model name."""
    import re

    if meta.get("zoo") is not None:
        return str(meta["zoo"]), float(meta.get("width", 1.0))
    named = re.match(r"(\w+) \(width ([0-9.]+)", str(meta.get("model", "")))
    return (named[1], float(named[2])) if named else (None, 0.0)


def compressed_twin(metas: Mapping[K, Mapping[str, Any]], key: K) -> K | None:
    """Among profiled networks (their test CS-profiles' metadata), the compressed single-exit model of
    `key`'s: the same zoo network at half its width, on the same data, profiled on the same device."""
    zoo, width = network_identity(metas[key])
    if zoo is None:
        return None
    return next((other for other, meta in metas.items() if other != key and network_identity(meta) == (zoo, width / 2)
                 and all(meta.get(k) == metas[key].get(k) for k in ("device", "dataset"))), None)


def markdown_table(rows: Sequence[dict[str, object]], title: str = "") -> str:
    """The comparison (:func:`compare`) as a markdown table, differences marked * where significant."""
    def pct(value: object, signed: bool = False) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * float(value):+.2f}" if signed else f"{100 * float(value):.2f}"  # type: ignore[arg-type]

    lines = [f"**{title}**", ""] if title else []
    lines += ["| policy | accuracy (%) | 95% CI | exact (%) | EINet - policy (pp, paired) | paired 95% CI | branches |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        mark = " *" if row["significant"] else ""
        interval = "-" if row["paired_ci95"] is None else f"±{pct(row['paired_ci95'])}"
        lines.append(f"| {row['policy']} | {pct(row['accuracy'])} | ±{pct(row['ci95'])} | {pct(row['expected'])} "
                     f"| {pct(row['einet_minus_policy'], signed=True)}{mark} | {interval} "
                     f"| {float(row['branches']):.2f} |")  # type: ignore[arg-type]
    lines += ["", "\\* the paired 95% interval excludes 0: a real difference, not sampling noise."]
    return "\n".join(lines) + "\n"


PAPER_COLUMNS = ("statistics", "EINet", "EINet (paper)", "static 25%", "static 50%", "static 100%", "dynamic 90%",
                 "dynamic 95%", "dynamic 99%", "single-exit", "compressed single-exit", "clairvoyant")
# Paired against the statistics plan: policy -> CSV columns of (mean difference, 95% half-width, significant).
PAIRED_WITH_STATISTICS = {"EINet": ("einet_minus_statistics", "paired_ci95", "significant"),
                          "EINet (paper)": ("paper_einet_minus_statistics", "paper_einet_paired_ci95",
                                            "paper_einet_significant")}


def model_row(model: str, results: Sequence[PolicyResult]) -> dict[str, object]:
    """One model's row of the paper's table: each policy's exact accuracy, and einet's and the
    paper's EINet minus the statistics plan, paired, with the 95% half-width."""
    by_name = {r.name: r for r in results}
    row: dict[str, object] = {"model": model}
    for name in PAPER_COLUMNS:
        row[name] = by_name[name].expected if name in by_name else None
    for policy, columns in PAIRED_WITH_STATISTICS.items():
        paired = paired_difference(by_name[policy], by_name["statistics"])
        row.update(zip(columns, (paired.mean, paired.ci95, paired.significant)))
    return row


def models_table(rows: Sequence[dict[str, object]], title: str = "") -> str:
    """The paper's table, one row per model (exact accuracies in %; '-' where a policy does not apply)."""
    def pct(value: object) -> str:
        return "-" if value is None else f"{100 * float(value):.2f}"  # type: ignore[arg-type]

    def paired(row: dict[str, object], columns: tuple[str, str, str]) -> str:
        mean, ci, significant = (row[column] for column in columns)
        return f"{100 * float(mean):+.2f} ± {100 * float(ci):.2f}{' *' if significant else ''}"  # type: ignore[arg-type]

    lines = [f"**{title}**", ""] if title else []
    lines += ["| model | " + " | ".join(PAPER_COLUMNS) + " | "
              + " | ".join(f"{policy} - statistics (pp, paired)" for policy in PAIRED_WITH_STATISTICS) + " |",
              "|---|" + "---:|" * (len(PAPER_COLUMNS) + len(PAIRED_WITH_STATISTICS))]
    for row in rows:
        lines.append(f"| {row['model']} | " + " | ".join(pct(row[name]) for name in PAPER_COLUMNS) + " | "
                     + " | ".join(paired(row, columns) for columns in PAIRED_WITH_STATISTICS.values()) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[dict[str, object]]) -> str:
    """Table rows as CSV, one column per key of the first row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def accuracy_curves(policies: Callable[[Distribution], Sequence[Policy]], cs: CSProfile, et: ETProfile,
                    kind: str, scales: Sequence[float], draws: int = 20,
                    rule: str | AnswerRule = "latest") -> dict[str, list[tuple[float, float]]]:
    """Accuracy against the mean exit time: for each scale, the policies built for that distribution."""
    full = full_inference_time(et)
    curves: dict[str, list[tuple[float, float]]] = {}
    for scale in scales:
        dist = relative_distribution(kind, full, scale)
        mean_tau = float(sample_exit_times(dist, (20000,), np.random.default_rng(1)).mean())
        for policy in policies(dist):
            result = evaluate(policy, cs, et, dist, draws=draws, rule=rule)
            curves.setdefault(result.name, []).append((mean_tau / full, result.expected))
    return curves


def _distinct_colours(count: int) -> list[tuple[float, ...]]:
    """`count` colours, all different: tab10 then tab20's light shades (20), else samples of turbo."""
    import matplotlib

    if count <= 20:
        return [*matplotlib.colormaps["tab10"].colors,  # type: ignore[attr-defined]  # ListedColormaps
                *matplotlib.colormaps["tab20"].colors[1::2]][:count]  # type: ignore[attr-defined]
    turbo = matplotlib.colormaps["turbo"]
    return [tuple(turbo(x)) for x in np.linspace(0.05, 0.95, count)]


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: str, title: str,
                reference: str = "statistics") -> object:
    """Accuracy vs mean exit time, one line per policy, and below it each policy's difference from
    the `reference` policy (the statistics plan) in points: a symmetric-log axis, linear within
    ±0.1 pp, so a lead of 0.1 pp stands clear of 0 while leads of several points still fit. Every
    line has its own colour (EINet: black and thick). Draws on a Figure with the Agg canvas, so
    whatever pyplot backend the caller uses is left alone. Needs matplotlib (the `plot` extra).
    Returns the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    base = dict(curves[reference]) if reference in curves else None
    fig = Figure(figsize=(7, 7.5 if base else 4.5))
    FigureCanvasAgg(fig)
    if base:
        ax, diff = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        ax, diff = fig.subplots(), None
    others = [name for name in curves if name != "EINet"]
    colour = dict(zip(others, _distinct_colours(len(others)))) | {"EINet": (0.0, 0.0, 0.0, 1.0)}
    markers = "osD^v<>pP*Xh"
    for k, (name, points) in enumerate(curves.items()):
        xs, ys = zip(*points)
        style = {"color": colour[name], "linewidth": 2.5 if name == "EINet" else 1.2,
                 "linestyle": "--" if name == "clairvoyant" else "-", "marker": markers[k % len(markers)],
                 "markersize": 3}
        ax.plot(xs, [100 * y for y in ys], label=name, **style)
        if diff is not None and base is not None:
            paired = [(x, 100 * (y - base[x])) for x, y in points if x in base]
            if paired:
                diff.plot(*zip(*paired), label=name, **style)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    bottom = ax
    if diff is not None:
        diff.axhline(0.0, color="grey", linewidth=0.8)
        diff.set_yscale("symlog", linthresh=0.1, linscale=1.0)
        diff.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+g}" if v else "0"))
        diff.set_ylabel(f"minus {reference} (pp)")
        diff.grid(alpha=0.3, which="both")
        bottom = diff
    bottom.set_xlabel("mean exit time / full inference time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig
