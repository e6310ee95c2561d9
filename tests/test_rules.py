"""Output rules: the live running answer against the simulator's vectorised one, the ensemble
statistics plan against brute force, and bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einet
from einet.formats.profiles import CSProfile
from einet.policies import ensemble_statistics_plan
from einet.reference import hybrid_search
from einet.rules import AnswerRule, RunningAnswer, held_correctness, time_zero_answer


def random_profile(rng: np.random.Generator, samples: int, exits: int, classes: int) -> CSProfile:
    logits = rng.normal(0, 2, (samples, exits, classes))
    labels = rng.integers(0, classes, samples)
    logits[np.arange(samples), :, labels] += rng.normal(1, 1, (samples, exits))  # better than chance
    log_probs = logits - np.log(np.exp(logits).sum(2, keepdims=True))
    stored = log_probs.astype(np.float16)
    prediction = stored.argmax(2)
    confidence = np.exp(stored.astype(np.float32).max(2))
    return CSProfile(confidence, prediction, prediction == labels[:, None], labels, {"split": "holdout"}, stored)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rule_name=st.sampled_from(["latest", "best", "ensemble"]),
       with_prior=st.booleans())
def test_running_answer_agrees_with_the_simulator(seed, rule_name, with_prior):
    rng = np.random.default_rng(seed)
    cs = random_profile(rng, 30, 6, 5)
    weights = tuple(rng.uniform(0, 2, 6).tolist()) if rule_name == "ensemble" else None
    rule = AnswerRule(rule_name, weights, *(time_zero_answer(cs.labels) if with_prior else (None, 0.0)))
    exits = np.full((30, 6), -1)
    for s in range(30):  # each sample runs a random subset of its branches, in order
        ran = np.flatnonzero(rng.random(6) < 0.6)
        exits[s, :ran.size] = ran
    held = held_correctness(exits, cs, rule)
    running = RunningAnswer(rule)
    log_probs = cs.dense_log_probs()
    for s in range(30):
        running.reset()
        assert held[s, 0] == (running.prediction is not None and running.prediction == cs.labels[s])
        for q, exit_index in enumerate(exits[s][exits[s] >= 0]):
            running.add(int(exit_index), log_probs[s, exit_index])
            assert held[s, q + 1] == (running.prediction == cs.labels[s]), (s, q)


def test_ensemble_statistics_plan_is_the_exhaustive_optimum_when_the_search_enumerates_everything():
    rng = np.random.default_rng(0)
    cs = random_profile(rng, 200, 4, 4)
    et = einet.ETProfile(rng.uniform(1, 2, 4), rng.uniform(0.2, 1, 4))
    dist = einet.Uniform(0.0, et.total())
    rule = AnswerRule("ensemble", (1.0, 0.5, 1.5, 1.0), *time_zero_answer(cs.labels))
    log_probs = cs.dense_log_probs()

    def value(mask):
        ran = np.flatnonzero(mask)
        scores = np.zeros(4)
        for q, k in enumerate(ran):
            total = (log_probs[:, ran[:q + 1]] * np.asarray(rule.weights, np.float32)[ran[:q + 1]][None, :, None])
            scores[k] = (total.sum(1).argmax(1) == cs.labels).mean()
        return einet.expected_accuracy(mask, scores, et, dist, held=rule.time_zero_accuracy)

    best = max(itertools.product([False, True], repeat=4), key=lambda m: value(np.array(m)))
    plan = ensemble_statistics_plan(cs, et, dist, rule, depth=4)
    assert value(plan) == pytest.approx(value(np.array(best)), abs=1e-12)


def test_hybrid_search_matches_the_native_one_on_per_exit_scores():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(3, 9))
        scores = rng.random(n)
        et = einet.ETProfile(rng.uniform(1, 2, n), rng.uniform(0.1, 1, n))
        dist = einet.Uniform(0.0, et.total())
        mask, value, evaluations = hybrid_search(
            lambda m, s=scores, e=et, d=dist: einet.expected_accuracy(m, s, e, d), n, depth=3)
        native = einet.search(scores, et, dist, method="hybrid", depth=3)
        assert value == pytest.approx(native.value, abs=1e-12)
        np.testing.assert_array_equal(np.array(mask, dtype=bool), native.mask)  # the same plan: the same tie rules
        assert evaluations == native.evaluations


def test_time_zero_answer_is_the_most_frequent_class():
    assert time_zero_answer(np.array([2, 1, 2, 0, 2])) == (2, 0.6)


@pytest.mark.parametrize("arguments, message", [
    (("majority",), "unknown rule"),
    (("ensemble",), "needs per-exit weights"),
    (("latest", (1.0,)), "only it takes them"),
    (("ensemble", (1.0, -1.0)), r"ensemble weight must lie in \[0, inf\]"),
    (("latest", None, -1), "time_zero_class"),
    (("latest", None, 1, 1.5), "time_zero_accuracy"),
])
def test_bad_rules_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        AnswerRule(*arguments)


def test_ensemble_needs_log_probabilities():
    cs = random_profile(np.random.default_rng(1), 5, 3, 3)
    old = CSProfile(cs.confidence, cs.prediction, cs.correct, cs.labels)
    with pytest.raises(ValueError, match="regenerate it"):
        held_correctness(np.zeros((5, 3), dtype=np.int64), old, AnswerRule("ensemble", (1.0, 1.0, 1.0)))


@pytest.mark.parametrize("signal", ["margin", "agreement"])
def test_a_predictor_reading_another_signal_round_trips_and_drives_einet(tmp_path, signal):
    pytest.importorskip("torch")
    from einet.distributions import full_inference_time, relative_distribution
    from einet.evaluation.simulate import evaluate
    from einet.formats.predictor_file import read_predictor
    from einet.policies import EINet
    from einet.predictor import fit_predictor, load_predictor, save_predictor

    rng = np.random.default_rng(5)
    holdout, test = random_profile(rng, 300, 5, 4), random_profile(rng, 100, 5, 4)
    model, _ = fit_predictor(holdout, epochs=3, progress=False, signal=signal)
    save_predictor(tmp_path / "p.npz", model)
    assert read_predictor(tmp_path / "p.npz").signal == signal
    assert load_predictor(tmp_path / "p.npz").signal == signal
    et = einet.ETProfile(rng.uniform(1, 2, 5), rng.uniform(0.2, 1, 5))
    dist = relative_distribution("uniform", full_inference_time(et))
    policy = EINet(model.to_native(), et, dist, signal=signal)
    assert policy.needs_log_probs  # the simulator hands it each exit's log-probabilities
    assert 0 <= evaluate(policy, test, et, dist, draws=1).expected <= 1
    with pytest.raises(ValueError, match="rules latest and best"):
        EINet(model.to_native(), et, dist, AnswerRule("ensemble", (1.0,) * 5), signal=signal)
    with pytest.raises(ValueError, match="unknown signal"):
        fit_predictor(holdout, epochs=1, progress=False, signal="loudness")


def test_agreement_compares_with_the_previous_observed_exit():
    from einet.signals import agreement

    predictions = np.array([[1, 1, 2, 2, 2]])
    observed = np.array([[True, False, True, True, False]])
    assert agreement(predictions, observed).tolist() == [[0, 1, 0, 1, 1]]


def test_a_rule_record_round_trips_and_older_files_still_read():
    rule = AnswerRule("ensemble", (1.0, 0.5), 3, 0.25)
    assert AnswerRule.from_record(rule.record(), num_exits=2) == rule
    older = {"name": "ensemble", "weights": [1.0, 0.5], "prior_class": 3, "prior_accuracy": 0.25}
    assert AnswerRule.from_record(older) == rule
    with pytest.raises(TypeError, match="fields"):
        AnswerRule.from_record(older | {"time_zero_class": 3})  # both spellings: ambiguous
    with pytest.raises(ValueError, match="list of 3 numbers"):
        AnswerRule.from_record(rule.record(), num_exits=3)
