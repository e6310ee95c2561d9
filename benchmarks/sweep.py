"""Planner speed over model sizes and exit-time distributions, as a markdown table.

    python -m benchmarks.sweep            # prints the table and writes benchmarks/results/sweep.md

Per call from Python, on random instances (einet.synthetic.random_problem): one
hybrid(depth=4) search, native and pure-Python reference, and one E evaluation
inside a batched native call. Times are the minimum over repeats.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

import einet
from benchmarks.timing import best_time
from einet import reference
from einet.synthetic import DISTRIBUTION_KINDS, random_problem

SIZES = (3, 5, 14, 21, 40)


def measure(n: int, kind: str) -> dict[str, float]:
    rng = np.random.default_rng(1000 + n)
    case = random_problem(rng, n, kind)
    plans = rng.random((20_000, n)) < 0.5
    search_s = best_time(lambda: einet.search(case.scores, case.et, case.dist), number=200, repeat=5)
    reference_s = best_time(lambda: reference.search(case.scores, case.et, case.dist), number=1, repeat=2)
    e_s = best_time(lambda: einet.expected_accuracy(plans, case.scores, case.et, case.dist), number=5) / len(plans)
    plan = einet.search(case.scores, case.et, case.dist)
    return {"search_us": search_s * 1e6, "reference_ms": reference_s * 1e3, "speedup": reference_s / search_s,
            "e_ns": e_s * 1e9, "evaluations": plan.evaluations}


def main() -> None:
    lines = [
        f"Planner sweep on {platform.processor() or platform.machine()}, einet {einet.__version__}, "
        f"Python {platform.python_version()} (`python -m benchmarks.sweep`).",
        "",
        "| N | distribution | hybrid search (us) | reference search (ms) | speed-up | E per plan, batched (ns) "
        "| plans evaluated |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        for kind in DISTRIBUTION_KINDS:
            r = measure(n, kind)
            lines.append(f"| {n} | {kind} | {r['search_us']:.1f} | {r['reference_ms']:.2f} | {r['speedup']:.0f}x "
                         f"| {r['e_ns']:.1f} | {r['evaluations']:.0f} |")
            print(lines[-1], flush=True)
    out = Path(__file__).resolve().parent / "results" / "sweep.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
