"""The native planner against the pure-Python reference, and the searches against each other."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einet
from einet import reference
from einet.synthetic import DISTRIBUTION_KINDS as DIST_KINDS
from tests.strategies import exit_time_distribution

unit = st.floats(0.0, 1.0)


def every_plan(n: int) -> np.ndarray:
    """All 2^n plans of n blocks, one per row, in lexicographic order."""
    return np.array(list(itertools.product([False, True], repeat=n)), dtype=bool).reshape(2**n, n)


@st.composite
def planning_states(draw, max_blocks: int = 7):
    """A whole planning problem: profile, scores, distribution and online state."""
    n = draw(st.integers(1, max_blocks))
    conv = draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n))
    branch = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    et = einet.ETProfile(conv, branch)
    total = max(et.total(), 1e-3)
    dist = exit_time_distribution(draw, total)
    start = draw(st.integers(0, n))
    state = {
        "start": start,
        "elapsed": draw(st.floats(0.0, total)),
        "held": draw(unit),
        "rule": draw(st.sampled_from(["latest", "best"])),
    }
    scores = draw(st.lists(unit, min_size=n, max_size=n))
    return scores, et, dist, state


@given(planning_states(), st.data())
@settings(max_examples=300, deadline=None)
def test_objective_matches_reference(problem, data):
    scores, et, dist, state = problem
    n = et.num_blocks - state["start"]
    mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    native = einet.expected_accuracy(mask, scores, et, dist, **state)
    assert native == pytest.approx(reference.expected_accuracy(mask, scores, et, dist, **state), abs=1e-12)
    assert 0.0 <= native <= 1.0 + 1e-12


@given(planning_states(max_blocks=6))
@settings(max_examples=200, deadline=None)
def test_batched_objective_matches_single(problem):
    scores, et, dist, state = problem
    plans = every_plan(et.num_blocks - state["start"])
    batched = einet.expected_accuracy(plans, scores, et, dist, **state)
    single = [einet.expected_accuracy(plan, scores, et, dist, **state) for plan in plans]
    np.testing.assert_array_equal(batched, single)


@pytest.mark.parametrize("method", ["exhaustive", "greedy", "hybrid", "random"])
@given(problem=planning_states())
@settings(max_examples=60, deadline=None)
def test_search_matches_reference(method, problem):
    scores, et, dist, state = problem
    native = einet.search(scores, et, dist, method=method, depth=2, budget=50, seed=7, **state)
    python = reference.search(scores, et, dist, method=method, depth=2, budget=50, seed=7, **state)
    assert native.value == pytest.approx(python.value, abs=1e-12)
    np.testing.assert_array_equal(native.mask, python.mask)
    assert native.evaluations == python.evaluations


@given(planning_states(max_blocks=9))
@settings(max_examples=150, deadline=None)
def test_exhaustive_is_the_brute_force_optimum(problem):
    scores, et, dist, state = problem
    n = et.num_blocks - state["start"]
    plans = every_plan(n)
    every_value = reference.expected_accuracy(plans, scores, et, dist, **state)
    best = einet.search(scores, et, dist, method="exhaustive", **state)
    assert best.value == pytest.approx(every_value.max(), abs=1e-12)
    assert best.evaluations == 2**n
    # Ties go to fewer branches, then to the lexicographically smaller mask.
    tied = plans[every_value >= every_value.max() - 1e-12]
    fewest = tied[tied.sum(axis=1) == tied.sum(axis=1).min()]
    assert best.mask.sum() == fewest.sum(axis=1).min()
    assert best.value >= einet.expected_accuracy(best.mask, scores, et, dist, **state) - 1e-15


@given(planning_states(max_blocks=12), st.integers(0, 5))
@settings(max_examples=150, deadline=None)
def test_hybrid_never_worse_than_greedy_nor_better_than_exhaustive(problem, depth):
    scores, et, dist, state = problem
    greedy = einet.search(scores, et, dist, method="greedy", **state)
    hybrid = einet.search(scores, et, dist, method="hybrid", depth=depth, **state)
    exhaustive = einet.search(scores, et, dist, method="exhaustive", **state)
    assert hybrid.value >= greedy.value - 1e-12
    assert exhaustive.value >= hybrid.value - 1e-12


def test_hybrid_close_to_exhaustive_on_random_instances(make_instance):
    rng = np.random.default_rng(1)
    within = []
    for _ in range(300):
        case = make_instance(rng, int(rng.integers(3, 15)), str(rng.choice(DIST_KINDS)))
        best = einet.search(case.scores, case.et, case.dist, method="exhaustive").value
        hybrid = einet.search(case.scores, case.et, case.dist, method="hybrid").value
        within.append(hybrid >= best * (1 - 1e-3))
    assert np.mean(within) >= 0.99


def test_plan_values_are_their_expected_accuracy(make_instance):
    case = make_instance(np.random.default_rng(0), 14, "normal")
    for method in ("greedy", "hybrid", "random"):
        plan = einet.search(case.scores, case.et, case.dist, method=method)
        assert plan.value == pytest.approx(einet.expected_accuracy(plan.mask, case.scores, case.et, case.dist))


def test_known_values():
    et = einet.ETProfile([1.0, 1.0], [1.0, 1.0])
    dist = einet.Uniform(0.0, 4.0)
    # Branches finish at 2 and 4: answer 0.5 held on [2, 4), 0.9 never (tau < 4 a.s.).
    assert einet.expected_accuracy([True, True], [0.5, 0.9], et, dist) == pytest.approx(0.5 * 0.5)
    # Only the last branch: it finishes at 3, held on [3, 4).
    assert einet.expected_accuracy([False, True], [0.5, 0.9], et, dist) == pytest.approx(0.9 * 0.25)
    # Nothing run: the held score for the whole remaining mass.
    assert einet.expected_accuracy([False, False], [0.5, 0.9], et, dist, held=0.1) == pytest.approx(0.1)
    # Online: one block done at t0 = 2 with 0.5 held; the rest of the mass is 1/2.
    assert einet.expected_accuracy([True], [0.5, 0.9], et, dist, start=1, elapsed=2.0, held=0.5) == pytest.approx(
        0.5 * 0.5
    )


def test_rule_best_keeps_the_most_confident_answer():
    et = einet.ETProfile([1.0, 1.0], [0.0, 0.0])
    dist = einet.Uniform(0.0, 4.0)
    latest = einet.expected_accuracy([True, True], [0.9, 0.2], et, dist)
    best = einet.expected_accuracy([True, True], [0.9, 0.2], et, dist, rule="best")
    assert latest == pytest.approx(0.9 * 0.25 + 0.2 * 0.5)
    assert best == pytest.approx(0.9 * 0.75)


def test_no_blocks_left_is_the_held_answer():
    et = einet.ETProfile([1.0], [1.0])
    plan = einet.search([0.5], et, einet.Uniform(0, 4), start=1, elapsed=1.0, held=0.3)
    assert plan.mask.shape == (0,)
    assert plan.value == pytest.approx(0.3 * 0.75)


@pytest.mark.parametrize("kind", DIST_KINDS)
def test_cdf_matches_reference(kind, make_distribution):
    dist = make_distribution(kind, 10.0, np.random.default_rng(3))
    times = np.linspace(-1.0, 12.0, 131)
    native = dist.cdf(times)
    np.testing.assert_allclose(native, [reference.cdf(dist, float(t)) for t in times], rtol=0, atol=1e-15)
    assert np.all(np.diff(native) >= 0)
    assert dist.cdf(5.0) == native[60]


@pytest.mark.parametrize("kind", DIST_KINDS)
def test_distributions_pickle_and_repr(kind, make_distribution):
    dist = make_distribution(kind, 10.0, np.random.default_rng(3))
    clone = pickle.loads(pickle.dumps(dist))
    assert type(clone) is type(dist)
    assert clone.cdf(4.2) == dist.cdf(4.2)
    assert repr(dist).startswith(type(dist).__name__ + "(")


def test_truncated_normal_has_no_mass_below_zero():
    dist = einet.Normal(1.0, 2.0)
    assert dist.cdf(0.0) == 0.0
    assert dist.cdf(1e9) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["greedy", "hybrid", "random"])
def test_search_batch_matches_single_searches(make_instance, method):
    rng = np.random.default_rng(5)
    case = make_instance(rng, 10, "normal")
    scores = np.clip(case.scores + rng.normal(0, 0.2, (64, 10)), 0, 1)
    elapsed = rng.uniform(0, 2, 64)
    for threads in (1, 2, None):
        batch = einet.search_batch(scores, case.et, case.dist, method=method, start=2, elapsed=elapsed,
                                   held=0.2, threads=threads, budget=30)
        assert batch.masks.shape == (64, 8)
        for row in range(64):
            single = einet.search(scores[row], case.et, case.dist, method=method, start=2,
                                  elapsed=elapsed[row], held=0.2, budget=30)
            np.testing.assert_array_equal(batch.masks[row], single.mask)
            assert batch.values[row] == single.value
            assert batch.evaluations[row] == single.evaluations


def test_reference_search_batch_matches_native(make_instance):
    rng = np.random.default_rng(6)
    case = make_instance(rng, 6, "uniform")
    scores = np.clip(case.scores + rng.normal(0, 0.2, (5, 6)), 0, 1)
    native = einet.search_batch(scores, case.et, case.dist)
    python = reference.search_batch(scores, case.et, case.dist)
    np.testing.assert_array_equal(native.masks, python.masks)
    np.testing.assert_allclose(native.values, python.values, atol=1e-12)


def test_etprofile():
    et = einet.ETProfile([1, 2], [0.5, 0.25])
    assert et.num_blocks == 2
    assert et.total() == 3.75
    assert et == einet.ETProfile([1.0, 2.0], [0.5, 0.25])
    with pytest.raises(ValueError):
        et.conv[0] = 3.0


def test_version_flows_from_the_build():
    from importlib.metadata import version

    assert einet.__version__ == version("einet")


# Exact values from mpmath at 50 digits: (Q(-mean/std) - Q((t - mean)/std)) / Q(-mean/std), Q(x) = erfc(x/sqrt2)/2.
@pytest.mark.parametrize(
    ("mean", "std", "t", "exact"),
    [
        (-8.2, 1.0, 0.05, 0.3410853916300523362),  # most mass below 0: 1 - Phi(8.2) rounds to 1e-16
        (-30.0, 2.0, 0.01, 0.072574563847890688418),  # Phi(15) rounds to 1: refused as "no mass" before
        (-37.0, 1.0, 1e-3, 0.036350353163608294605),  # mass at t >= 0 is 5.7e-300
        (-37.0, 1.0, 0.5, 0.9999999919565178205),
        (10.0, 1.0, 1.0, 1.1285122074235990425e-19),  # the lower tail stays exact too
        (5.0, 0.5, 0.3, 2.7205337183219650038e-21),
        (1.0, 2.0, 0.5, 0.13414486076393369063),
    ],
)
def test_truncated_normal_cdf_keeps_precision_in_both_tails(mean, std, t, exact):
    dist = einet.Normal(mean, std)
    # Backward stable: exact for a mean within a few ulps, hence ~(mean/std)^2 ulps of relative error.
    assert dist.cdf(t) == pytest.approx(exact, rel=1e-11, abs=0)
    assert reference.cdf(dist, t) == pytest.approx(exact, rel=1e-11, abs=0)
    times = np.linspace(0.0, 2 * t, 41)
    native = dist.cdf(times)
    assert np.all(np.diff(native) >= 0)
    np.testing.assert_allclose(native, [reference.cdf(dist, float(x)) for x in times], rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", DIST_KINDS)
def test_cdf_policy_for_nan_and_infinite_times(kind, make_distribution):
    """One policy for every distribution, native and reference alike: NaN in, NaN out; F(-inf) = 0, F(inf) = 1."""
    dist = make_distribution(kind, 10.0, np.random.default_rng(3))
    assert np.isnan(dist.cdf(float("nan")))
    assert np.isnan(reference.cdf(dist, float("nan")))
    values = dist.cdf(np.array([-np.inf, np.nan, 5.0, np.inf]))
    assert np.isnan(values[1]) and not np.isnan(values[[0, 2, 3]]).any()
    assert (values[0], values[3]) == (0.0, 1.0)
    assert (reference.cdf(dist, -np.inf), reference.cdf(dist, np.inf)) == (0.0, 1.0)


def test_search_options_defaults_agree_and_are_read_only():
    """One set of defaults: the native class's, the Python builder's and the search functions' give the same plan."""
    native, built = einet.SearchOptions(), einet.planner.search_options()
    assert [(o.method, o.depth, o.budget, o.seed) for o in (native, built)] == [("hybrid", 4, 1000, 0)] * 2
    assert repr(native) == "SearchOptions(method='hybrid', depth=4, budget=1000, seed=0)"
    with pytest.raises(AttributeError):
        native.depth = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="depth must be >= 0"):
        einet.planner.search_options(depth=-1)
    with pytest.raises(TypeError, match="method must be a string"):
        einet.planner.search_options(method=None)  # type: ignore[arg-type]
