"""The paper's six CIFAR-10 models, ours beside the paper's own figures (README, docs/results.md).

For each zoo model, the committed fixture trained on this project's CPU: width, final-exit test
accuracy, exact expected accuracy of the statistics plan and of EINet under the exit-time
distribution, EINet minus statistics with its paired 95% interval (``einet table``), and the
paper's "statistics" and "ours" on CIFAR-10 (EINet, TMC 2024). Then the MNIST models.

    python -m experiments.zoo.paper_table --dist uniform > docs/zoo_table.md
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import tempfile
from pathlib import Path

from benchmarks.fixtures_lib import folder
from einet.cli import main as einet
from einet.evaluation.tables import PAIRED_WITH_STATISTICS
from einet.formats.profiles import CSProfile

# zoo model: (fixture, the paper's CIFAR-10 "statistics" and "ours", %)
CIFAR10 = {
    "b_alexnet": ("b_alexnet_w05_cpu", 78.43, 78.71),
    "resnet50_fine": ("resnet50_fine_w0125_cpu", 85.62, 86.65),
    "flex_vgg16": ("flex_vgg16_w025_cpu", 88.10, 88.23),
    "msdnet21": ("msdnet21_w025_cpu", 80.87, 81.11),
    "vgg16_fine": ("vgg16_fine_w025_cpu_joint", 88.98, 89.12),
    "msdnet40": ("msdnet40_w0125_cpu", 86.38, 86.60),
}
MNIST = {"b_alexnet": "b_alexnet_w025_mnist_cpu", "vgg16_fine": "vgg16_fine_w025_mnist_cpu"}


def table_rows(names: list[str], dist: str) -> dict[str, dict[str, str]]:
    """`einet table` over the fixtures, its CSV rows by fixture name."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        code = einet(["table", "--profiles", *(str(folder(n)) for n in names), "--dist", dist,
                      "--out", str(Path(tmp) / "t")])
        if code != 0:
            raise SystemExit(f"einet table failed ({code})")
        rows = list(csv.DictReader((Path(tmp) / "t.csv").open()))
    return dict(zip(names, rows))


def final_exit_accuracy(name: str) -> float:
    return 100 * float(CSProfile.load(folder(name) / "cs-test.npz").correct[:, -1].mean())


def paired(row: dict[str, str], mean: str, ci: str, significant: str) -> str:
    mark = " *" if row[significant] == "True" else ""
    return f"{100 * float(row[mean]):+.2f} ± {100 * float(row[ci]):.2f}{mark}"


def line(zoo: str, name: str, row: dict[str, str], paper: tuple[float, float] | None) -> str:
    width = CSProfile.load(folder(name) / "cs-test.npz").meta.get("width", "?")
    ours = (f"| {zoo} | {width} | {final_exit_accuracy(name):.1f} | {100 * float(row['statistics']):.2f} | "
            f"{paired(row, *PAIRED_WITH_STATISTICS['EINet (paper)'])} | "
            f"{paired(row, *PAIRED_WITH_STATISTICS['EINet'])} | "
            f"{100 * float(row['clairvoyant']):.2f} |")
    if paper is None:
        return ours
    return ours + f" {paper[0]:.2f} | {paper[1]:.2f} | {paper[1] - paper[0]:+.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default="uniform", choices=["uniform", "normal"])
    args = parser.parse_args()
    present = [zoo for zoo, (name, *_) in CIFAR10.items() if (folder(name) / "cs-test.npz").exists()]
    rows = table_rows([CIFAR10[zoo][0] for zoo in present], args.dist)
    print("**CIFAR-10: ours (this project's CPU, reduced width, few epochs) beside the paper's figures; "
          f"exact expected accuracy (%), {args.dist} exit time over one full inference**\n")
    print("| model | width | final exit (%) | statistics | EINet (paper's) - statistics (pp) | "
          "EINet (ours) - statistics (pp) | clairvoyant | paper: statistics | paper: EINet | paper: difference |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for zoo in present:
        name, *paper = CIFAR10[zoo]
        print(line(zoo, name, rows[name], (paper[0], paper[1])))
    missing = [zoo for zoo in CIFAR10 if zoo not in present]
    if missing:
        print(f"\nNot trained yet: {', '.join(missing)}.")
    mnist = [name for name in MNIST.values() if (folder(name) / "cs-test.npz").exists()]
    if mnist:
        rows = table_rows(mnist, args.dist)
        print(f"\n**MNIST (full training split, CPU), {args.dist} exit time**\n")
        print("| model | width | final exit (%) | statistics | EINet (paper's) - statistics (pp) | EINet (ours) - "
              "statistics (pp) | clairvoyant |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for zoo, name in MNIST.items():
            if name in rows:
                print(line(zoo, name, rows[name], None))
    print("\nDifferences are paired over the test images, exact over the exit time, with their 95% interval; "
          "\\* the interval excludes 0.")


if __name__ == "__main__":
    main()
