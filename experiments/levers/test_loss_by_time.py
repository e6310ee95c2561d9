"""experiments/levers/loss_by_time.py: its interval-by-interval account adds up to what the simulator scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from einet.distributions import full_inference_time, relative_distribution
from einet.evaluation.simulate import evaluate
from einet.formats.profiles import CSProfile, ETRecord
from einet.policies import statistics_plan
from experiments.levers import loss_by_time

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "benchmarks" / "fixtures"


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_the_account_matches_the_simulator_under_a_reference_horizon(kind):
    light, joint = FIXTURES / "vgg16_fine_w025_cpu_light", FIXTURES / "vgg16_fine_w025_cpu_joint"
    dist = relative_distribution(kind, full_inference_time(ETRecord.load(joint / "et.npz").profile))
    plan, lands, accuracy, final = loss_by_time.held_curve(light, dist)
    edges, mass, held = loss_by_time.account(lands, accuracy, dist)
    et = ETRecord.load(light / "et.npz").profile
    simulated = evaluate(statistics_plan(CSProfile.load(light / "cs-holdout.npz"), et, dist),
                         CSProfile.load(light / "cs-test.npz"), et, dist, draws=1).expected
    assert float((mass * held).sum()) == pytest.approx(simulated, abs=1e-6)
    assert mass.sum() == pytest.approx(1.0) and np.all(np.diff(edges) > 0)
    lines = loss_by_time.table("light", plan, lands, accuracy, final, dist)
    assert lines[-2] == (f"expected accuracy {100 * simulated:.2f}% = {100 * final:.2f}% - "
                         f"{100 * (final - simulated):.2f} pp")
