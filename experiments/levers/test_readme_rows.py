"""README.md's Results table, row by row: the paper's method (uniform / normal %) and the deployed
configuration's paired gain (+x ± y pp) are what the committed fixtures give.

Against the committed tables (results/*.json, fast), and recomputed from the fixtures by
anytime_levers.configurations (half a minute to two a row here: slow). Its predictors are fitted with a fixed seed, so
the recomputation matches to the printed hundredth (a half unit, plus float noise, of tolerance).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from einet.distributions import full_inference_time
from einet.evaluation.simulate import paired_difference
from einet.formats.profiles import ETRecord

torch = pytest.importorskip("torch")

from experiments.levers.anytime_levers import configurations  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "benchmarks" / "fixtures"
RESULTS = Path(__file__).resolve().parent / "results"
KINDS = ("uniform", "normal")
EPOCHS = 40  # anytime_levers.py's default, which made the committed tables
TOLERANCE_PP = 0.006  # the table prints hundredths
CI_TOLERANCE_PP = 0.01


@dataclass(frozen=True)
class Row:
    table: str  # results/<table>.json
    reference: Path  # the paper's method: rule latest, EINet (paper), on this fixture
    deployed: str  # the recipe (as the table names it) whose deployed configuration the README ships
    twin: Path | None = None  # that recipe's fixture, when it is not the reference


ROWS = {
    "VGG-16 fine, w0.25": Row("vgg16_fine_w025_cpu", FIXTURES / "vgg16_fine_w025_cpu_joint",
                              "joint, light exits, exits 1-5 pooled 8x8, second look (flip, depth 8 of 14)",
                              ROOT / "experiments/levers/fixtures/vgg16_fine_w025_cpu_light_refit_second_look_d8"),
    "B-AlexNet, w0.5": Row("b_alexnet_w05_cpu", FIXTURES / "b_alexnet_w05_cpu", "joint + thumbnail exit",
                           FIXTURES / "b_alexnet_w05_cpu_thumbnail"),
    "B-AlexNet, w0.25": Row("b_alexnet_w025_cpu", FIXTURES / "b_alexnet_w025_cpu_joint", "joint, light exits",
                            FIXTURES / "b_alexnet_w025_cpu_light"),
    "ResNet-50 fine, w0.125": Row("resnet50_fine_w0125_cpu", FIXTURES / "resnet50_fine_w0125_cpu", "joint"),
    "FlexVGG-16, w0.25": Row("flex_vgg16_w025_cpu", FIXTURES / "flex_vgg16_w025_cpu", "joint"),
}


@dataclass(frozen=True)
class Stated:
    paper: dict[str, float]  # kind: %
    gain: dict[str, tuple[float, float]]  # kind: (mean, 95% CI), pp


def readme_rows() -> dict[str, Stated]:
    """The Results table as README.md prints it."""
    text = (ROOT / "README.md").read_text()
    results = text[text.index("## Results"):]
    rows = {}
    for line in results[:results.index("\n## ")].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] not in ROWS:
            continue
        paper = re.fullmatch(r"([\d.]+) / ([\d.]+)%", cells[1])
        gains = [re.fullmatch(r"([+-][\d.]+) ± ([\d.]+) pp", cell) for cell in cells[3:5]]
        assert paper and all(gains), line
        rows[cells[0]] = Stated(dict(zip(KINDS, map(float, paper.groups()))),
                                {kind: (float(g[1]), float(g[2])) for kind, g in zip(KINDS, gains)})
    return rows


def assert_paper(stated: Stated, kind: str, paper: float) -> None:
    """`paper`: a fraction, as anytime_levers computes it."""
    assert abs(100 * paper - stated.paper[kind]) <= TOLERANCE_PP, (kind, 100 * paper, stated.paper[kind])


def assert_gain(stated: Stated, kind: str, mean: float, ci95: float) -> None:
    """`mean`, `ci95`: fractions, as anytime_levers computes them."""
    stated_mean, stated_ci = stated.gain[kind]
    assert abs(100 * mean - stated_mean) <= TOLERANCE_PP, (kind, 100 * mean, stated_mean)
    assert abs(100 * ci95 - stated_ci) <= CI_TOLERANCE_PP, (kind, 100 * ci95, stated_ci)


def test_the_table_has_every_row() -> None:
    assert set(readme_rows()) == set(ROWS)


@pytest.mark.parametrize("model", ROWS)
def test_a_row_states_its_committed_table(model: str) -> None:
    row, stated = ROWS[model], readme_rows()[model]
    table = json.loads((RESULTS / f"{row.table}.json").read_text())
    for kind in KINDS:
        assert_paper(stated, kind, table[f"joint | EINet (paper) | latest | {kind}"]["expected"])
        deployed = table[f"{row.deployed} | deployed | {kind}"]
        assert_gain(stated, kind, deployed["mean"], deployed["ci95"])
        chosen = table.get(f"network chosen on held-out data | {kind}")  # where the table has twins to choose from
        assert chosen is None or chosen["network"] == row.deployed, chosen


@pytest.fixture
def as_the_script_runs():
    """anytime_levers.py's settings (floating-point warnings off, one thread), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with np.errstate(all="ignore"):
        yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("model", ROWS)
def test_a_row_is_what_the_fixtures_give(model: str, as_the_script_runs) -> None:
    row, stated = ROWS[model], readme_rows()[model]
    reference, _ = configurations(row.reference, list(KINDS), 0, EPOCHS)
    for kind in KINDS:
        assert_paper(stated, kind, reference[kind, "EINet (paper) | latest"].expected)
    deployed = reference
    if row.twin is not None:
        if not (row.twin / "cs-test.npz").exists():
            pytest.skip(f"the paper's method checked; the gain needs {row.twin.name}'s CS-profiles, not committed "
                        "(experiments/levers/README.md makes them from CIFAR-10)")
        # exit times in seconds: the reference's, as in the table
        full_time = full_inference_time(ETRecord.load(row.reference / "et.npz").profile)
        deployed, _ = configurations(row.twin, list(KINDS), 0, EPOCHS, full_time)
    for kind in KINDS:
        gain = paired_difference(deployed[kind, "deployed"], reference[kind, "EINet (paper) | latest"])
        assert_gain(stated, kind, gain.mean, gain.ci95)
