"""The session file: a native OnlineSession saved as text and loaded back (csrc/include/einet/session_file.hpp).

A loaded session must make the same decisions as the one saved, over the same begin / observe /
run_branch calls; saving it again must give the same text, byte for byte; and a malformed,
truncated or other-version file must raise ValueError naming what is wrong.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einet
from einet import _core
from einet.planner import ETProfile
from einet.policies import EINet
from tests.strategies import exit_time_distribution

N = 5
RULES = ["latest", "best"]
METHODS = ["exhaustive", "greedy", "hybrid", "random"]
DISTRIBUTIONS: dict[str, Callable[[float, np.random.Generator], einet.Distribution]] = {
    "uniform": lambda total, rng: einet.Uniform(0.1 * total, 1.2 * total),
    "normal": lambda total, rng: einet.Normal(0.6 * total, 0.3 * total),
    "exponential": lambda total, rng: einet.Exponential(2.0 / total),
    "empirical": lambda total, rng: einet.Empirical(rng.uniform(0.0, total, 40)),
    "deterministic": lambda total, rng: einet.Deterministic(0.5 * total),
}


def random_predictor(rng: np.random.Generator, n: int, hidden: list[int], calibrated: bool) -> einet.NativePredictor:
    widths = [2 * n, *hidden, n]
    weights = [rng.normal(0.0, 1.5, size=(o, i)) for i, o in zip(widths, widths[1:])]
    biases = [rng.normal(0.0, 1.0, size=o) for o in widths[1:]]
    return einet.NativePredictor(weights, biases, calibrated)


def decisions(session: _core.OnlineSession, conv: np.ndarray, branch: np.ndarray,
              confidences: np.ndarray) -> list[list[bool]]:
    """Every run_branch answer, for every block, after begin and after each observe: samples as the runtime
    drives them (a branch observed where the plan runs it), then observations in any order."""
    n = conv.size
    seen = []
    for sample, row in enumerate(confidences):
        session.begin()
        seen.append([session.run_branch(b) for b in range(n + 1)])
        if sample % 2 == 0:
            elapsed = 0.0
            for block in range(n):
                elapsed += conv[block]
                if session.run_branch(block):
                    elapsed += branch[block]
                    session.observe(block, row[block], elapsed)
                    seen.append([session.run_branch(b) for b in range(n + 1)])
        else:
            for block in (n - 1, 0, 2, 2, 1):
                session.observe(block % n, row[block % n], 0.3 * (block + 1))
                seen.append([session.run_branch(b) for b in range(n + 1)])
    return seen


def same_session(session: _core.OnlineSession, conv: np.ndarray, branch: np.ndarray, seed: int) -> None:
    """session saved and loaded: the same text again, and the same decisions."""
    text = session.save()
    loaded = _core.OnlineSession.load(text)
    assert loaded.save() == text
    assert _core.OnlineSession.load(loaded.save()).save() == text
    confidences = np.random.default_rng(seed).uniform(0.0, 1.0, size=(6, conv.size))
    assert decisions(loaded, conv, branch, confidences) == decisions(session, conv, branch, confidences)


@pytest.mark.parametrize("kind", list(DISTRIBUTIONS))
@pytest.mark.parametrize("hidden", [[], [7]], ids=["one layer", "two layers"])
@pytest.mark.parametrize("calibrated", [False, True], ids=["uncalibrated", "calibrated"])
def test_a_loaded_session_makes_the_same_decisions(kind: str, hidden: list[int], calibrated: bool) -> None:
    for case, (rule, method) in enumerate(itertools.product(RULES, METHODS)):
        rng = np.random.default_rng([case, len(hidden), int(calibrated)])
        et = ETProfile(rng.uniform(0.05, 1.0, N), rng.uniform(0.0, 0.4, N))
        dist = DISTRIBUTIONS[kind](float(et.conv.sum() + et.branch.sum()), rng)
        predictor = random_predictor(rng, N, hidden, calibrated)
        policy = EINet(predictor, et, dist, rule=rule, method=method, depth=2, budget=30,
                       seed=int(rng.integers(2**63)), margin=[0.0, 0.01][case % 2])
        text = policy.session.save()
        assert f"\nrule {rule}\nmethod {method}\n" in text
        assert f"\ncalibrated {int(calibrated)}\nlayers {len(hidden) + 1}\n" in text
        assert f"\ndistribution {kind} " in text
        same_session(policy.session, et.conv, et.branch, seed=case)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[_core.OnlineSession, np.ndarray, np.ndarray]:
    """Any session the constructor accepts, and its ET-profile."""
    n = draw(st.integers(1, 6))
    conv = np.array(draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n)))
    branch = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    dist = exit_time_distribution(draw, max(conv.sum() + branch.sum(), 1e-3), max_samples=20)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    predictor = random_predictor(rng, n, draw(st.lists(st.integers(1, 6), max_size=2)), draw(st.booleans()))
    options = einet.SearchOptions(draw(st.sampled_from(METHODS)), draw(st.integers(0, 5)), draw(st.integers(1, 40)),
                                  draw(st.integers(0, 2**64 - 1)))
    first_plan = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    margin = draw(st.one_of(st.sampled_from([0.0, 1e-4, 0.05]), st.floats(0.0, 1.0)))
    session = _core.OnlineSession(predictor, conv, branch, dist, draw(st.sampled_from(RULES)), options, first_plan,
                                  margin)
    return session, conv, branch


@given(sessions(), st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_any_session_round_trips(setup: tuple[_core.OnlineSession, np.ndarray, np.ndarray], seed: int) -> None:
    session, conv, branch = setup
    same_session(session, conv, branch, seed)


def test_the_file_holds_what_the_session_was_made_from_not_a_sample_in_progress() -> None:
    rng = np.random.default_rng(1)
    session = _core.OnlineSession(random_predictor(rng, 3, [4], True), [1.0, 1.0, 1.0], [0.1, 0.1, 0.1],
                                  einet.Exponential(0.5), "best", einet.SearchOptions("greedy"),
                                  np.ones(3, dtype=bool), 0.0)
    before = session.save()
    session.observe(0, 0.2, 1.1)
    assert session.save() == before
    assert _core.OnlineSession.load(before).run_branch(1)  # a loaded session starts at begin(): the first plan


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=9, max_size=9),
       st.floats(allow_nan=False, allow_infinity=False, min_value=0.0))
@settings(max_examples=200, deadline=None)
def test_numbers_are_written_exactly(weights: list[float], margin: float) -> None:
    # Any finite double (subnormals, -0.0, the largest) is written as its own bits: Python's
    # float.fromhex reads back every value the writer wrote.
    # Two layers for one exit, written in this order: weight [2, 2], bias [2], weight [1, 2], bias [1].
    values = np.array(weights)
    predictor = einet.NativePredictor([values[:4].reshape(2, 2), values[6:8].reshape(1, 2)], [values[4:6], values[8:]],
                                      False)
    session = _core.OnlineSession(predictor, [1.0], [0.5], einet.Uniform(0.0, 2.0), "latest",
                                  einet.SearchOptions("exhaustive"), np.array([True]), margin)
    text = session.save()
    lines = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    written = [float.fromhex(v) for line in text.splitlines() if line.startswith(("weight ", "bias "))
               for v in line.split()[1:]]
    assert [np.float64(w).tobytes() for w in written] == [np.float64(w).tobytes() for w in weights]
    assert np.float64(float.fromhex(lines["margin"])).tobytes() == np.float64(margin).tobytes()
    assert _core.OnlineSession.load(text).save() == text


# A session file as this version writes it: pins the format (a change to it needs a new version).
GOLDEN = """einet-online-session 1
blocks 2
conv 0x1p+0 0x1p-1
branch 0x1.999999999999ap-4 0x0p+0
calibrated 0
layers 1
layer 4 2
weight 0x1.999999999999ap-4 -0x1.999999999999ap-3 0x1.8p+1 0x0.0000000000001p-1022 0x0p+0 -0x0p+0 0x1.4p+2 0x1.8p+2
bias 0x1p-1 -0x1p+0
distribution empirical 3
samples 0x1.999999999999ap-4 0x1.3333333333333p-2 0x1p+1
rule best
method random
depth 4
budget 1000
seed 18446744073709551615
first_plan 1 0
margin 0x1.47ae147ae147bp-8
end
"""


def test_the_format_is_pinned() -> None:
    assert _core.OnlineSession.load(GOLDEN).save() == GOLDEN
    predictor = einet.NativePredictor([np.array([[0.1, -0.2, 3.0, 5e-324], [0.0, -0.0, 5.0, 6.0]])],
                                      [np.array([0.5, -1.0])], False)
    session = _core.OnlineSession(predictor, [1.0, 0.5], [0.1, 0.0], einet.Empirical([0.3, 0.1, 2.0]), "best",
                                  einet.SearchOptions("random", 4, 1000, 2**64 - 1), np.array([1, 0], dtype=bool),
                                  0.005)
    assert session.save() == GOLDEN


def test_decimal_numbers_and_a_missing_last_newline_are_read() -> None:
    text = GOLDEN.replace("margin 0x1.47ae147ae147bp-8", "margin 0.005").replace("conv 0x1p+0", "conv 1.0")
    assert _core.OnlineSession.load(text).save() == GOLDEN
    assert _core.OnlineSession.load(GOLDEN.rstrip("\n")).save() == GOLDEN
    assert _core.OnlineSession.load(GOLDEN + "\n  \n").save() == GOLDEN


def replace_line(keyword: str, line: str) -> str:
    """GOLDEN with the line of `keyword` replaced."""
    return re.sub(rf"^{keyword} .*$", line, GOLDEN, count=1, flags=re.MULTILINE)


MALFORMED = {
    "wrong magic": (GOLDEN.replace("einet-online-session", "einet-offline-session"),
                    "line 1 starts with 'einet-offline-session', not 'einet-online-session': not a session file"),
    "not a session at all": ("hello\n", "line 1 starts with 'hello'"),
    "wrong version": (GOLDEN.replace("einet-online-session 1", "einet-online-session 2"),
                      "line 1 (einet-online-session): version '2' is not supported: this reader reads version 1"),
    "no version": (GOLDEN.replace("einet-online-session 1", "einet-online-session"),
                   "line 1 (einet-online-session): expected 1 value(s), got 0"),
    "empty": ("", "truncated: it ends after line 0, where 'einet-online-session' was expected"),
    "truncated at a line": (GOLDEN[:GOLDEN.index("rule")],
                            "truncated: it ends after line 11, where 'rule' was expected"),
    "truncated in a line": (GOLDEN[:GOLDEN.index("rule") - 5], "truncated: it ends inside line 11"),
    "no end": (GOLDEN.replace("end\n", ""), "truncated: it ends after line 18, where 'end' was expected"),
    "a non-number": (replace_line("conv", "conv 1.0 abc"), "line 3 (conv): 'abc' is not a finite number"),
    "a NaN weight": (GOLDEN.replace("weight 0x1.999999999999ap-4", "weight nan"),
                     "line 8 (weight): 'nan' is not a finite number"),
    "an infinite bias": (replace_line("bias", "bias inf 0"), "line 9 (bias): 'inf' is not a finite number"),
    "an overflowing number": (replace_line("margin", "margin 0x1p+1024"),
                              "line 18 (margin): '0x1p+1024' is not a finite number"),
    "a weight too many": (GOLDEN.replace("weight ", "weight 0x1p+0 "), "line 8 (weight): expected 8 value(s), got 9"),
    "a conv time short": (replace_line("conv", "conv 0x1p+0"), "line 3 (conv): expected 2 value(s), got 1"),
    "blocks and plan differ": (replace_line("first_plan", "first_plan 1 0 1"),
                               "line 17 (first_plan): expected 2 value(s), got 3"),
    "fewer samples than declared": (replace_line("samples", "samples 0x1p+0"),
                                    "line 11 (samples): expected 3 value(s), got 1"),
    "a layer of the wrong shape": (replace_line("layer", "layer 4 3"), "line 8 (weight): expected 12 value(s), got 8"),
    "a layer missing": (replace_line("layers", "layers 2"), "line 10: expected 'layer', got 'distribution'"),
    "layers that do not chain": (replace_line("layers", "layers 2").replace(
        "bias 0x1p-1 -0x1p+0\n", "bias 0x1p-1 -0x1p+0\nlayer 3 2\nweight 1 2 3 4 5 6\nbias 0 0\n"),
        "line 6 (layers): layer 1 takes 3 inputs but layer 0 gives 2"),
    "a predictor of other exits": (replace_line("layer", "layer 2 2").replace(
        GOLDEN.splitlines()[7], "weight 1 2 3 4"),
        "line 6 (layers): the first layer takes 2 inputs; a predictor of 2 exits takes 2 x that many"),
    "an unknown keyword": (GOLDEN.replace("branch ", "brunch "), "line 4: expected 'branch', got 'brunch'"),
    "an unknown distribution": (GOLDEN.replace("empirical 3", "gamma 3"),
                                "line 10 (distribution): unknown distribution 'gamma'"),
    "impossible parameters": (replace_line("distribution", "distribution uniform 0x1p+0 0x1p-1").replace(
        GOLDEN.splitlines()[10] + "\n", ""),
                              "line 10 (distribution): Uniform needs low < high"),
    "no samples": (GOLDEN.replace("empirical 3", "empirical 0").replace(
        "samples 0x1.999999999999ap-4 0x1.3333333333333p-2 0x1p+1", "samples"),
        "line 11 (samples): Empirical needs at least one sample"),
    "an unknown rule": (replace_line("rule", "rule first"), "line 12 (rule): unknown rule 'first'"),
    "an unknown method": (replace_line("method", "method simplex"), "line 13 (method): unknown method 'simplex'"),
    "a negative depth": (replace_line("depth", "depth -1"), "line 14 (depth): '-1' is not an unsigned integer"),
    "a fractional budget": (replace_line("budget", "budget 1.5"), "line 15 (budget): '1.5' is not an unsigned integer"),
    "a seed beyond 64 bits": (replace_line("seed", "seed 18446744073709551616"),
                              "line 16 (seed): '18446744073709551616' is too large"),
    "a plan entry of 2": (replace_line("first_plan", "first_plan 1 2"),
                          "line 17 (first_plan): '2' is out of range: at most 1"),
    "a calibrated flag of 2": (replace_line("calibrated", "calibrated 2"), "line 5 (calibrated): '2' is out of range"),
    "a search over its cap": (replace_line("budget", "budget 10000001"), "random search budget=10000001 refused"),
    "a negative margin": (replace_line("margin", "margin -0x1p-8"), "margin must be >= 0"),
    "odd bytes": (replace_line("rule", "rule \u00e9\x01"), r"line 12 (rule): unknown rule '\xc3\xa9\x01'"),
    "text after the end": (GOLDEN + "more\n", "text after its last line, 'end'"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_file_is_refused_naming_what_is_wrong(name: str) -> None:
    text, message = MALFORMED[name]
    with pytest.raises(ValueError, match="^einet session file: .*" + re.escape(message)):
        _core.OnlineSession.load(text)


def test_every_truncation_is_refused() -> None:
    for cut in range(len(GOLDEN) - len("nd\n")):  # every cut before the last line
        with pytest.raises(ValueError, match=r"^einet session file: truncated: it ends "):
            _core.OnlineSession.load(GOLDEN[:cut])
