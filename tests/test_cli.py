"""The `einet` command on the committed fixtures: evaluate, fit-predictor, report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from einet.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "vgg16_fine_w05_cuda"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "einet.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "profile", "fit-predictor", "evaluate", "report", "demo"):
        assert command in out.stdout


@pytest.mark.skipif(not FIXTURE.exists(), reason="fixture missing")
def test_fit_predictor_evaluate_and_report(tmp_path, capsys):
    predictor = tmp_path / "p.npz"
    assert main(["fit-predictor", "--cs", str(FIXTURE / "cs-holdout.npz"), "--epochs", "2", "--hidden", "16",
                 "--out", str(predictor)]) == 0
    assert main(["evaluate", "--profiles", str(FIXTURE), "--predictor", str(predictor), "--draws", "2",
                 "--dist", "normal", "--out", str(tmp_path / "table")]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| EINet |" in table and "| clairvoyant |" in table
    assert (tmp_path / "table.csv").read_text().startswith("policy,")
    pytest.importorskip("matplotlib")
    assert main(["report", "--profiles", str(FIXTURE), "--predictor", str(predictor), "--scales", "0.5", "1.0",
                 "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_fit_predictor_refuses_the_test_split(tmp_path):
    if not FIXTURE.exists():
        pytest.skip("fixture missing")
    with pytest.raises(ValueError, match="test-split"):
        main(["fit-predictor", "--cs", str(FIXTURE / "cs-test.npz"), "--out", str(tmp_path / "p.npz")])


def test_demo_runs_end_to_end_on_the_embedded_data(capsys):
    assert main(["demo", "--epochs", "1", "--samples", "30"]) == 0
    out = capsys.readouterr().out
    assert "| EINet |" in out and "real-time accuracy" in out and "done in" in out
