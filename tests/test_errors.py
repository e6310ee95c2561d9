"""Bad input gets a ValueError that names the problem: never a crash, a hang or a silent wrong answer."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

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


def native_predictor(n: int = 5) -> einet.NativePredictor:
    rng = np.random.default_rng(0)
    return einet.NativePredictor([rng.normal(size=(8, 2 * n)), rng.normal(size=(n, 8))],
                                 [np.zeros(8), np.zeros(n)], True)


@pytest.mark.parametrize(
    ("held_exit", "error", "message"),
    [
        (math.inf, TypeError, "held_exit must be an int.*got inf"),
        (0.5, TypeError, "held_exit must be an int.*got 0.5"),
        (2.0, TypeError, "held_exit must be an int.*got 2.0"),
        ("0", TypeError, "held_exit must be an int.*got '0'"),
        (True, TypeError, "held_exit must be an int.*got True"),
        (np.bool_(True), TypeError, "held_exit must be an int.*got "),
        (None, TypeError, "held_exit must be an int.*got None"),
        (-2, ValueError, r"held_exit=-2 must be -1 or an exit in \[0, 5\)"),
        (5, ValueError, r"held_exit=5 must be -1 or an exit in \[0, 5\)"),
        (2**70, ValueError, f"held_exit={2**70} must be -1 or an exit"),
        (-(2**70), ValueError, f"held_exit=-{2**70} must be -1 or an exit"),
        (1, ValueError, "held_exit=1 must be -1 or an observed exit"),
    ],
)
def test_online_step_held_exit_must_be_an_exit_index(held_exit, error, message):
    et = einet.ETProfile([1.0] * 5, [0.3] * 5)
    observed, mask = np.array([0.7, 0.0, 0.9, 0.0, 0.0]), np.array([1, 0, 1, 0, 0], dtype=bool)
    with pytest.raises(error, match=message):
        einet.online_step(native_predictor(), observed, mask, et, DIST, start=3, elapsed=1.0, held_exit=held_exit)
    with pytest.raises(error, match=message):  # the native module checks the same, called directly
        einet._core.online_step(native_predictor(), observed, mask, et.conv, et.branch, DIST, einet.SearchOptions(),
                                3, 1.0, held_exit, 0.0, "latest")
    for fine in (2, np.int64(2), -1, np.int32(-1)):
        step = einet.online_step(native_predictor(), observed, mask, et, DIST, start=3, elapsed=1.0, held_exit=fine)
        assert step.plan.mask.size == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "hybrid", "depth": 21}, "hybrid depth=21 refused: at most 20"),
        ({"method": "hybrid", "depth": 20}, r"hybrid depth=20 over 64 blocks refused: 2\^20 x 64 .* at most 2\^25"),
        ({"method": "random", "budget": 10**7 + 1}, "budget=10000001 refused: at most 10000000"),
    ],
)
def test_unbounded_searches_are_refused(changes, message):
    et = einet.ETProfile(np.ones(64), np.full(64, 0.1))
    scores, dist = np.full(64, 0.5), einet.Uniform(0.0, 70.0)
    with pytest.raises(ValueError, match=message):
        einet.search(scores, et, dist, **changes)
    with pytest.raises(ValueError, match=message):
        einet.search_batch(np.tile(scores, (2, 1)), et, dist, **changes)
    with pytest.raises(ValueError, match=message):
        einet.online_step(native_predictor(64), scores, np.zeros(64, dtype=bool), et, dist, start=0, elapsed=0.0,
                          **changes)


def test_search_caps_leave_the_feasible_searches():
    et = einet.ETProfile(np.ones(20), np.full(20, 0.1))
    plan = einet.search(np.full(20, 0.5), et, einet.Uniform(0.0, 22.0), method="hybrid", depth=20)
    assert plan.mask.size == 20  # 2^20 x 20 is within the work cap
    assert einet.search(np.full(20, 0.5), et, einet.Uniform(0.0, 22.0), method="hybrid", depth=20, start=19).value > 0


@pytest.mark.parametrize("threads", [257, 10_000])
def test_search_batch_threads_are_capped(threads):
    with pytest.raises(ValueError, match=f"threads={threads} refused: at most 256"):
        einet.search_batch(np.full((4, 3), 0.5), ET, DIST, threads=threads)
    assert einet.search_batch(np.full((4, 3), 0.5), ET, DIST, threads=256).masks.shape == (4, 3)


_THREAD_STARVED = """
import resource, sys
import numpy as np
import einet
et = einet.ETProfile(np.ones(12), np.full(12, 0.1))
scores = np.random.default_rng(0).random((600, 12))
expected = einet.search_batch(scores, et, einet.Uniform(0.0, 13.0), threads=1)
with open("/proc/self/status") as status:
    size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
# Room for a few thread stacks (8 MiB each) but not for 200 of them.
limit = (size_kb + 48 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
got = einet.search_batch(scores, et, einet.Uniform(0.0, 13.0), threads=200)
assert (got.masks == expected.masks).all() and (got.values == expected.values).all()
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS and /proc")
def test_search_batch_survives_failed_thread_creation():
    """Before the fix a failed std::thread left joinable threads behind: std::terminate killed the process."""
    result = subprocess.run([sys.executable, "-c", _THREAD_STARVED], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip() == "ok"


def _interrupt_soon(delay: float) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
@pytest.mark.parametrize("batch", [False, True])
def test_native_search_is_interruptible(batch):
    """Ctrl-C reaches a long native search (GIL released) within a fraction of a second.

    One search is capped at about a second of work (MAX_SEARCH_WORK_LOG2), so the long call is
    a batch: on the calling thread alone (batch=False) or on two threads."""
    et = einet.ETProfile(np.ones(100), np.full(100, 0.1))  # uninterrupted: about 0.5 s per sample
    scores = np.random.default_rng(0).random((64, 100))
    arguments = {"et": et, "dist": einet.Uniform(0.0, 110.0), "method": "random", "budget": 10**6}
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer = _interrupt_soon(0.3)
        begin = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            einet.search_batch(scores, threads=2 if batch else 1, **arguments)
        elapsed = time.perf_counter() - begin
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 2.0, f"the search ran {elapsed:.1f} s after Ctrl-C"
