"""Planner speed: the native core against the pure-Python reference, in the same run.

Goals (issue 2, on a 2-core machine, per call from Python): hybrid(depth=4) at
N=14 <= 25 us and at N=40 <= 400 us; one E evaluation at N=14 <= 50 ns in a
batch inside the core; >= 100x the reference for E and >= 50x for search;
search_batch of 1,000 samples at N=14 on both cores >= 1.6x one core.
Run: python -m pytest benchmarks -k planner --benchmark-only
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import einet
from benchmarks.timing import best_time, median_seconds
from einet import reference

PLANS = 10_000


def random_plans(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    return rng.random((count, n)) < 0.5


@pytest.mark.benchmark(group="E, N=14, per plan")
def test_objective_batch_native(benchmark, make_instance, speed_goal):
    rng = np.random.default_rng(0)
    case = make_instance(rng, 14, "uniform")
    plans = random_plans(rng, PLANS, 14)
    values = benchmark(einet.expected_accuracy, plans, case.scores, case.et, case.dist)
    expected = reference.expected_accuracy(plans[:200], case.scores, case.et, case.dist)
    np.testing.assert_allclose(values[:200], expected, rtol=0, atol=1e-12)
    if benchmark.disabled:
        return
    per_plan = median_seconds(benchmark) / PLANS
    python_per_plan = best_time(lambda: reference.expected_accuracy(plans[:500], case.scores, case.et, case.dist),
                                repeat=3) / 500
    benchmark.extra_info.update(ns_per_plan=per_plan * 1e9, reference_ns_per_plan=python_per_plan * 1e9,
                                speedup=python_per_plan / per_plan)
    speed_goal(per_plan <= 50e-9, f"E takes {per_plan * 1e9:.1f} ns per plan, goal 50 ns")
    speed_goal(python_per_plan / per_plan >= 100, f"E only {python_per_plan / per_plan:.0f}x the reference")


@pytest.mark.benchmark(group="E, N=14, one call")
def test_objective_single_native(benchmark, make_instance):
    case = make_instance(np.random.default_rng(0), 14, "uniform")
    plan = np.ones(14, dtype=bool)
    value = benchmark(einet.expected_accuracy, plan, case.scores, case.et, case.dist)
    assert value == pytest.approx(reference.expected_accuracy(plan, case.scores, case.et, case.dist), abs=1e-12)


@pytest.mark.benchmark(group="E, N=14, one call")
def test_objective_single_reference(benchmark, make_instance):
    case = make_instance(np.random.default_rng(0), 14, "uniform")
    plan = np.ones(14, dtype=bool)
    value = benchmark(reference.expected_accuracy, plan, case.scores, case.et, case.dist)
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize(("n", "goal_us"), [(14, 25.0), (40, 400.0)])
@pytest.mark.benchmark(group="hybrid(depth=4) search")
def test_hybrid_search_native(benchmark, make_instance, speed_goal, n, goal_us):
    case = make_instance(np.random.default_rng(n), n, "uniform")
    plan = benchmark(einet.search, case.scores, case.et, case.dist)
    greedy = einet.search(case.scores, case.et, case.dist, method="greedy")
    assert plan.value >= greedy.value - 1e-12
    assert plan.value == pytest.approx(einet.expected_accuracy(plan.mask, case.scores, case.et, case.dist))
    if benchmark.disabled:
        return
    seconds = median_seconds(benchmark)
    benchmark.extra_info["us"] = seconds * 1e6
    speed_goal(seconds <= goal_us * 1e-6, f"hybrid at N={n} takes {seconds * 1e6:.1f} us, goal {goal_us} us")


@pytest.mark.benchmark(group="hybrid(depth=4) search")
def test_hybrid_search_reference_speedup(benchmark, make_instance, speed_goal):
    case = make_instance(np.random.default_rng(14), 14, "uniform")
    python = reference.search(case.scores, case.et, case.dist)
    plan = benchmark(einet.search, case.scores, case.et, case.dist)
    np.testing.assert_array_equal(plan.mask, python.mask)
    assert plan.evaluations == python.evaluations
    if benchmark.disabled:
        return
    python_seconds = best_time(lambda: reference.search(case.scores, case.et, case.dist), repeat=3)
    speedup = python_seconds / median_seconds(benchmark)
    benchmark.extra_info.update(reference_ms=python_seconds * 1e3, speedup=speedup)
    speed_goal(speedup >= 50, f"search only {speedup:.0f}x the reference")


@pytest.mark.benchmark(group="search_batch, 1000 samples, N=14")
def test_search_batch_uses_both_cores(benchmark, make_instance, speed_goal):
    rng = np.random.default_rng(7)
    case = make_instance(rng, 14, "normal")
    scores = np.clip(case.scores + rng.normal(0.0, 0.15, (1000, 14)), 0.0, 1.0)
    both = benchmark(einet.search_batch, scores, case.et, case.dist, threads=2)
    one = einet.search_batch(scores, case.et, case.dist, threads=1)
    np.testing.assert_array_equal(both.masks, one.masks)
    if benchmark.disabled or (os.cpu_count() or 1) < 2:
        return
    one_core = best_time(lambda: einet.search_batch(scores, case.et, case.dist, threads=1), repeat=7)
    two_cores = best_time(lambda: einet.search_batch(scores, case.et, case.dist, threads=2), repeat=7)
    benchmark.extra_info.update(one_core_ms=one_core * 1e3, two_cores_ms=two_cores * 1e3,
                                scaling=one_core / two_cores)
    speed_goal(one_core / two_cores >= 1.6, f"two cores only {one_core / two_cores:.2f}x one core")
