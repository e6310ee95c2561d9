"""The trace-driven simulator and the policies, on synthetic CS-profiles."""

from __future__ import annotations

import numpy as np
import pytest

import einet
from einet.distributions import full_inference_time, relative_distribution, sample_exit_times
from einet.evaluation.simulate import compare, evaluate, replay
from einet.evaluation.tables import csv_table, markdown_table
from einet.formats.profiles import CSProfile
from einet.policies import (
    Clairvoyant,
    ConfidenceThreshold,
    EINet,
    EveryExit,
    FixedPlan,
    single_exit,
    static_plan,
    statistics_plan,
)
from einet.rules import held_correctness


def tiny_cs() -> CSProfile:
    confidence = np.array([[0.5, 0.95, 0.99], [0.2, 0.4, 0.9]], dtype=np.float32)
    correct = np.array([[False, True, True], [False, False, True]])
    return CSProfile(confidence, np.where(correct, 0, 1), correct, np.zeros(2, dtype=np.int64))


ET = einet.ETProfile([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])


def test_static_and_single_exit_plans():
    assert static_plan(14, 0.25).mask.nonzero()[0].tolist() == [3, 6, 10, 13]
    assert static_plan(14, 0.5).mask.sum() == 7 and static_plan(14, 0.5).mask[-1]
    assert static_plan(3, 1.0).mask.all()
    assert single_exit(5).mask.nonzero()[0].tolist() == [4]
    with pytest.raises(ValueError, match="fraction"):
        static_plan(3, 0.0)


def test_a_fixed_plan_keeps_the_mask_it_was_made_with():
    mask = np.array([True, False, True])
    plan = FixedPlan(mask, "mine")
    mask[1] = True  # the caller's array: the plan copied it
    assert [plan.run_branch(i, 0.0) for i in range(3)] == [True, False, True]
    with pytest.raises(ValueError, match="read-only"):  # its decisions are a tuple read between blocks
        plan.mask[1] = True
    with pytest.raises(AttributeError):
        plan.mask = np.ones(3, dtype=bool)  # type: ignore[misc]
    assert all(type(plan.run_branch(i, 0.0)) is bool for i in range(3))


def test_replay_times_and_early_stop():
    trace = replay(ConfidenceThreshold(0.9), tiny_cs(), ET)
    # Sample 0 stops after exit 1 (0.95 >= 0.9); sample 1 runs every branch.
    np.testing.assert_array_equal(trace.times[0], [1.5, 3.0, np.inf])
    np.testing.assert_array_equal(trace.times[1], [1.5, 3.0, 4.5])
    trace = replay(single_exit(3), tiny_cs(), ET)
    np.testing.assert_array_equal(trace.times[:, 0], [3.5, 3.5])


def test_exact_and_drawn_accuracy_agree_and_match_hand_computation():
    dist = einet.Uniform(0.0, 5.0)
    result = evaluate(EveryExit(), tiny_cs(), ET, dist, draws=20000, seed=1)
    # Sample 0: right on [3, 5) -> 0.4; sample 1: right on [4.5, 5) -> 0.1.
    assert result.expected == pytest.approx(0.25)
    assert result.accuracy == pytest.approx(0.25, abs=0.01)
    best = evaluate(EveryExit(), tiny_cs(), ET, dist, draws=10, rule="best")
    assert best.expected == pytest.approx(0.25)


def test_best_rule_keeps_the_most_confident_answer():
    confidence = np.array([[0.9, 0.3, 0.5]], dtype=np.float32)
    correct = np.array([[True, False, False]])
    cs = CSProfile(confidence, np.where(correct, 0, 1), correct, np.zeros(1, dtype=np.int64))
    trace = replay(EveryExit(), cs, ET)
    assert held_correctness(trace.exits, cs, "latest")[0].tolist() == [False, True, False, False]
    assert held_correctness(trace.exits, cs, "best")[0].tolist() == [False, True, True, True]


@pytest.mark.parametrize("kind", ["uniform", "normal", "exponential"])
def test_sampled_exit_times_follow_the_cdf(kind):
    dist = relative_distribution(kind, 2.0)
    draws = sample_exit_times(dist, (40000,), np.random.default_rng(0))
    assert draws.min() >= 0
    for t in (0.5, 1.0, 1.5):
        assert np.mean(draws <= t) == pytest.approx(dist.cdf(t), abs=0.01)


def correlated_cs(samples: int, exits: int, seed: int) -> CSProfile:
    """Easy samples are right early with high confidence; hard ones only late, if at all."""
    rng = np.random.default_rng(seed)
    ease = rng.random(samples)
    depth = np.linspace(0.0, 1.0, exits)
    hard = ease < 0.5  # hard samples: early exits are useless, only the deepest ones may help
    p_right = np.where(hard[:, None], 0.9 * depth[None, :] ** 4, 0.6 + 0.35 * depth[None, :])
    correct = rng.random((samples, exits)) < p_right
    confidence = np.clip(p_right + rng.normal(0, 0.05, p_right.shape), 0, 1).astype(np.float32)
    return CSProfile(confidence, np.where(correct, 0, 1), correct, np.zeros(samples, dtype=np.int64),
                     {"split": "holdout"})


def test_einet_beats_the_statistics_plan_and_stays_under_the_ceiling():
    pytest.importorskip("torch")
    from einet.predictor import fit_predictor

    holdout, test = correlated_cs(3000, 8, 0), correlated_cs(1500, 8, 1)
    rng = np.random.default_rng(2)
    conv = rng.uniform(0.5, 1.5, 8)
    et = einet.ETProfile(conv, 0.6 * conv)
    dist = relative_distribution("uniform", full_inference_time(et), scale=1.5)
    model, _ = fit_predictor(holdout, "correctness", hidden=(32, 32), epochs=20, progress=False)
    policies = [EINet(model.to_native(), et, dist), statistics_plan(holdout.correct.mean(0), et, dist),
                static_plan(8, 1.0), ConfidenceThreshold(0.9), Clairvoyant(et, dist)]
    results = [evaluate(p, test, et, dist, draws=50) for p in policies]
    by_name = {r.name: r for r in results}
    assert by_name["EINet"].expected > by_name["statistics"].expected + 0.005
    assert by_name["clairvoyant"].expected >= max(r.expected for r in results) - 1e-12
    rows = compare(results)
    assert rows[0]["einet_minus_policy"] is None  # EINet is the reference
    statistics = next(r for r in rows if r["policy"] == "statistics")
    paired = np.mean(by_name["EINet"].per_sample_expected - by_name["statistics"].per_sample_expected)
    assert statistics["einet_minus_policy"] == pytest.approx(paired) and statistics["einet_minus_policy"] > 0
    assert statistics["significant"] == (statistics["einet_minus_policy"] > statistics["paired_ci95"] > 0)
    table = markdown_table(rows, "synthetic")
    assert "| EINet |" in table and "| clairvoyant |" in table
    assert csv_table(rows).splitlines()[0].startswith("policy,accuracy")
    assert "paired_ci95" in csv_table(rows).splitlines()[0]


def test_clairvoyant_needs_the_oracle_and_bad_inputs():
    with pytest.raises(ValueError, match="per-exit correctness"):
        Clairvoyant(ET, einet.Uniform(0, 4)).begin(None)
    with pytest.raises(ValueError, match="threshold"):
        ConfidenceThreshold(1.5)
    with pytest.raises(ValueError, match="draws"):
        evaluate(EveryExit(), tiny_cs(), ET, einet.Uniform(0, 4), draws=0)
    with pytest.raises(ValueError, match="3 exits but the ET-profile 2 blocks"):
        replay(EveryExit(), tiny_cs(), einet.ETProfile([1, 1], [1, 1]))
    with pytest.raises(ValueError, match="unknown distribution kind"):
        relative_distribution("gamma", 1.0)
