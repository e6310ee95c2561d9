"""The native OnlineSession against its pure-Python model (einet.reference.OnlineSession).

Random predictors (small random MLPs), ET-profiles, distributions, rules, search methods, margins
and observation sequences drive both; after begin() and after every observe() the two must make
the same run_branch decision for every block.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import einet
from einet import _core, reference
from tests.strategies import exit_time_distribution

unit = st.floats(0.0, 1.0)
confidences = st.one_of(unit, st.sampled_from([0.0, 0.5, 0.9, 1.0]))  # repeated values: ties under rule best


@st.composite
def sessions(draw):
    """Constructor arguments for both sessions: (native predictor, reference predictor, the rest)."""
    n = draw(st.integers(1, 6))
    conv = draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n))
    branch = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
    total = max(sum(conv) + sum(branch), 1e-3)
    dist = exit_time_distribution(draw, total, max_samples=20)
    widths = [2 * n, *draw(st.lists(st.integers(1, 6), max_size=2)), n]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    weights = [rng.normal(0.0, scale, size=(o, i)) for i, o in zip(widths, widths[1:])]
    biases = [rng.normal(0.0, scale, size=o) for o in widths[1:]]
    calibrated = draw(st.booleans())
    method = draw(st.sampled_from(["hybrid", "greedy", "exhaustive", "random"]))
    options = {
        "dist": dist,
        "rule": draw(st.sampled_from(["latest", "best"])),
        "method": method,
        "depth": draw(st.integers(0, 5)),
        "budget": draw(st.integers(1, 40)),
        "seed": draw(st.integers(0, 2**64 - 1)),
        "first_plan": np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        "margin": draw(st.sampled_from([0.0, 0.0, 1e-4, 0.005, 0.05, 0.3])),
    }
    native = einet.NativePredictor(weights, biases, calibrated)
    model = reference.Predictor(weights, biases, calibrated)
    return native, model, np.array(conv), np.array(branch), options


def same_decisions(native: _core.OnlineSession, model: reference.OnlineSession, n: int, when: str) -> None:
    got = [native.run_branch(b) for b in range(n + 1)]
    expected = [model.run_branch(b) for b in range(n + 1)]
    assert got == expected, f"{when}: native {got}, model {expected} (model plan from block {model.plan_start})"


@given(sessions(), st.data())
@settings(max_examples=150, deadline=None)
def test_native_session_matches_the_python_model(setup, data):
    predictor, model_predictor, conv, branch, options = setup
    n = conv.size
    search = einet.SearchOptions(*(options[key] for key in ("method", "depth", "budget", "seed")))
    native = _core.OnlineSession(predictor, conv, branch, options["dist"], options["rule"], search,
                                 options["first_plan"], options["margin"])
    model = reference.OnlineSession(model_predictor, conv, branch, **options)
    same_decisions(native, model, n, "after construction")
    for sample in range(data.draw(st.integers(1, 3), label="samples")):
        native.begin()
        model.begin()
        same_decisions(native, model, n, f"sample {sample}: after begin")
        if data.draw(st.booleans(), label="as the runtime drives it"):
            # Block by block: a branch runs where the plan says so and is then observed; the
            # forced exit may come at any point.
            elapsed = data.draw(st.floats(0.0, 0.5), label="start time")
            stop = data.draw(st.integers(0, n), label="forced exit after block")
            for block in range(stop):
                elapsed += float(conv[block])
                assert native.run_branch(block) == model.run_branch(block)
                if native.run_branch(block):
                    elapsed += float(branch[block])
                    confidence = data.draw(confidences, label=f"confidence {block}")
                    native.observe(block, confidence, elapsed)
                    model.observe(block, confidence, elapsed)
                    same_decisions(native, model, n, f"sample {sample}: after observing block {block}")
        else:
            # Any sequence the native session accepts: blocks in any order, repeated, any elapsed time.
            steps = data.draw(st.lists(st.tuples(st.integers(0, n - 1), confidences, st.floats(0.0, 20.0)), max_size=6),
                              label="observations")
            for block, confidence, elapsed in steps:
                native.observe(block, confidence, elapsed)
                model.observe(block, confidence, elapsed)
                same_decisions(native, model, n, f"sample {sample}: after observe({block}, {confidence}, {elapsed})")


@given(sessions(), st.data())
@settings(max_examples=100, deadline=None)
def test_reference_predictor_is_bit_identical(setup, data):
    predictor, model_predictor, conv, _, _ = setup
    n = conv.size
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    observed = np.array(data.draw(st.lists(unit, min_size=n, max_size=n)))
    got, expected = predictor.predict(observed, mask), model_predictor.predict(observed, mask)
    assert got.tolist() == expected.tolist()
