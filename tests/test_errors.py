"""Bad input gets a ValueError that names the problem: never a crash, a hang or a silent wrong answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

import einet

ET = einet.ETProfile([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])
SCORES = [0.3, 0.6, 0.9]
DIST = einet.Uniform(0.0, 4.5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: einet.Uniform(1.0, 1.0), "low < high"),
        (lambda: einet.Uniform(2.0, 1.0), "low < high"),
        (lambda: einet.Uniform(math.nan, 1.0), "finite"),
        (lambda: einet.Normal(1.0, 0.0), "std > 0"),
        (lambda: einet.Normal(1.0, -1.0), "std > 0"),
        (lambda: einet.Normal(math.inf, 1.0), "finite"),
        (lambda: einet.Normal(-100.0, 1.0), "no mass"),
        (lambda: einet.Exponential(0.0), "rate > 0"),
        (lambda: einet.Exponential(math.nan), "finite"),
        (lambda: einet.Empirical([]), "at least one sample"),
        (lambda: einet.Empirical([1.0, math.nan]), "finite"),
        (lambda: einet.Empirical(np.ones((2, 2))), r"1-D, got shape \(2, 2\)"),
        (lambda: einet.Deterministic(-1.0), "deadline >= 0"),
        (lambda: einet.Deterministic(math.inf), "finite"),
    ],
)
def test_impossible_distributions(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("conv", "branch", "message"),
    [
        ([], [], "no blocks|at least one block"),
        ([1.0, 2.0], [1.0], "differ in length"),
        ([1.0, -1.0], [1.0, 1.0], r"conv time\[1\] must be finite and >= 0"),
        ([1.0, math.nan], [1.0, 1.0], r"conv time\[1\]"),
        ([1.0, 1.0], [math.inf, 1.0], r"branch time\[0\]"),
        ([[1.0], [1.0]], [[1.0], [1.0]], r"1-D, got shape \(2, 1\)"),
    ],
)
def test_bad_profiles(conv, branch, message):
    with pytest.raises(ValueError, match=message):
        einet.ETProfile(conv, branch)


def call_search(**changes):
    arguments = {"scores": SCORES, "et": ET, "dist": DIST} | changes
    return einet.search(**arguments)


def call_objective(**changes):
    arguments = {"mask": [1, 0, 1], "scores": SCORES, "et": ET, "dist": DIST} | changes
    return einet.expected_accuracy(**arguments)


@pytest.mark.parametrize("call", [call_search, call_objective])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scores": [0.3, 0.6]}, "length 2 but the ET-profile has 3 blocks"),
        ({"scores": [[0.3, 0.6, 0.9]]}, r"scores must be 1-D, got shape \(1, 3\)"),
        ({"scores": [0.3, 1.5, 0.9]}, r"score\[1\] must be in \[0, 1\], got 1.5"),
        ({"scores": [0.3, -0.1, 0.9]}, r"score\[1\] must be in \[0, 1\]"),
        ({"scores": [0.3, math.nan, 0.9]}, r"score\[1\] must be in \[0, 1\], got nan"),
        ({"start": 4}, "start=4 is outside the model of 3 blocks"),
        ({"start": -1}, "start must be >= 0, got -1"),
        ({"start": 1.5}, "start must be an integer"),
        ({"elapsed": -1.0}, "elapsed must be finite and >= 0"),
        ({"elapsed": math.inf}, "elapsed must be finite"),
        ({"held": 2.0}, r"held must be in \[0, 1\]"),
        ({"held": math.nan}, r"held must be in \[0, 1\]"),
        ({"rule": "first"}, "unknown rule 'first'"),
    ],
)
def test_bad_planning_input(call, changes, message):
    with pytest.raises(ValueError, match=message):
        call(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "annealing"}, "unknown method 'annealing'"),
        ({"method": "hybrid", "depth": -1}, "depth must be >= 0"),
        ({"method": "hybrid", "depth": 40}, "depth=40 refused"),
        ({"method": "random", "budget": 0}, "budget >= 1"),
        ({"method": "random", "seed": -3}, "seed must be >= 0"),
    ],
)
def test_bad_search_options(changes, message):
    with pytest.raises(ValueError, match=message):
        call_search(**changes)


def test_exhaustive_refuses_more_than_25_blocks():
    et = einet.ETProfile(np.ones(26), np.ones(26))
    with pytest.raises(ValueError, match="exhaustive search over 26 blocks refused"):
        einet.search(np.full(26, 0.5), et, einet.Uniform(0, 52), method="exhaustive")
    # From an online state with 25 blocks left it runs.
    assert einet.search(np.full(26, 0.5), et, einet.Uniform(0, 52), method="greedy", start=1).mask.size == 25


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ([1, 0], "length 2 but 3 blocks remain"),
        ([1, 2, 0], r"plan\[1\] must be 0 or 1, got 2|only 0 and 1, got 2"),
        ([1, 256, 0], "only 0 and 1, got 256"),
        ([0.5, 0.0, 1.0], "booleans or the integers 0 and 1, got dtype float64"),
        (np.ones((2, 2), dtype=bool), r"plans have shape \(2, 2\) but 3 blocks remain"),
        (np.ones((2, 3, 1), dtype=bool), r"1-D or 2-D, got shape \(2, 3, 1\)"),
    ],
)
def test_bad_plans(mask, message):
    with pytest.raises(ValueError, match=message):
        call_objective(mask=mask)


def test_bad_distribution_type():
    with pytest.raises(TypeError, match="dist must be an einet distribution"):
        call_search(dist=lambda t: t)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scores": np.full(3, 0.5)}, r"2-D \[samples, blocks\], got shape \(3,\)"),
        ({"scores": np.full((4, 2), 0.5)}, r"shape \(4, 2\) but the ET-profile has 3 blocks"),
        ({"elapsed": np.zeros(3)}, "one entry per sample"),
        ({"held": np.array([0.1, 0.2, 1.5, 0.1])}, r"held must be in \[0, 1\], got 1.5"),
        ({"scores": np.array([[0.3, 0.6, 0.9]] * 3 + [[0.3, 9.0, 0.9]])}, r"score\[1\] must be in \[0, 1\]"),
        ({"start": 5}, "start=5 is outside the model"),
        ({"method": "exhaustive", "start": 0, "threads": 2}, None),
    ],
)
def test_bad_batches(changes, message):
    arguments = {"scores": np.full((4, 3), 0.5), "et": ET, "dist": DIST} | changes
    if message is None:
        assert einet.search_batch(**arguments).masks.shape == (4, 3)
        return
    with pytest.raises(ValueError, match=message):
        einet.search_batch(**arguments)
