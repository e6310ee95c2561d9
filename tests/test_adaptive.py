"""The adaptive runtime's estimates against simple Python models of them, and the runtime adapting."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import einet
from einet.policies import EveryExit
from einet.runtime.adaptive import Adaptation, BlockTimes, ExitTimes, kaplan_meier


def brute_kaplan_meier(times, observed):
    """Kaplan-Meier by its definition: at each distinct event time, survival *= 1 - deaths / at risk."""
    survival, result = 1.0, {}
    for t in sorted(set(t for t, o in zip(times, observed) if o)):
        at_risk = sum(1 for u in times if u >= t)
        deaths = sum(1 for u, o in zip(times, observed) if o and u == t)
        survival *= 1 - deaths / at_risk
        result[t] = 1 - survival
    return result


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=40))
def test_kaplan_meier_matches_its_definition(data):
    times = np.array([float(t) for t, _ in data])
    observed = np.array([o for _, o in data])
    events, cdf = kaplan_meier(times, observed)
    expected = brute_kaplan_meier(times.tolist(), observed.tolist())
    for t, value in expected.items():  # the CDF just after each distinct event time: the last of its ties
        assert cdf[np.flatnonzero(events == t)[-1]] == pytest.approx(value)


def test_kaplan_meier_without_censoring_is_the_empirical_cdf():
    times = np.random.default_rng(0).exponential(1.0, 500)
    events, cdf = kaplan_meier(times, np.ones(500, dtype=bool))
    assert np.allclose(cdf, np.arange(1, 501) / 500)
    assert np.all(np.diff(events) >= 0)


def test_exit_times_follow_censored_data_and_start_from_the_prior():
    prior = einet.Uniform(0.0, 10.0)
    estimate = ExitTimes(prior, horizon=10.0, window=4000, weight=50.0)
    assert estimate.distribution() is prior
    rng = np.random.default_rng(1)
    true = rng.normal(5.0, 1.0, 4000).clip(0)
    finished = rng.uniform(4.0, 8.0, 4000)  # samples that finished first only say tau > their end
    for t, f in zip(true, finished):
        estimate.observe(min(t, f), bool(t < f))
    learnt = estimate.distribution()
    from statistics import NormalDist

    for t in (3.0, 4.0, 5.0, 6.0):  # within the range the censoring leaves observable
        assert learnt.cdf(t) == pytest.approx(NormalDist(5.0, 1.0).cdf(t), abs=0.03)
    assert estimate.distance(prior) > 0.2 and estimate.distance(learnt) < 0.02


def test_exit_times_blend_with_the_prior_by_weight():
    estimate = ExitTimes(einet.Uniform(0.0, 1.0), horizon=1.0, weight=30.0)
    for _ in range(10):
        estimate.observe(0.1, True)  # every sample interrupted at 0.1
    assert estimate.cdf(np.array([0.5]))[0] == pytest.approx((10 * 1.0 + 30 * 0.5) / 40)
    estimate.observe(float("nan"), True)  # ignored
    assert len(estimate) == 10


def python_block_times(base, observations, block_rate, device_rate, clip):
    """BlockTimes' rule, written out: each factor moves by its rate towards the observed / expected ratio
    (clipped), the device factor first, the block's by the rest."""
    block, device = [1.0] * len(base), 1.0
    typical = (sum(base) + len(base)) / (2 * len(base))  # the branches of the test's profile take 1 s each
    for i, seconds in observations:
        ratio = max(1 / clip, min(clip, seconds / (base[i] * block[i] * device)))
        weight = min(1.0, base[i] / typical)
        device *= 1 + device_rate * weight * (ratio - 1)
        block[i] *= 1 + block_rate * (1 - device_rate * weight) * (ratio - 1)
    return [b * f * device for b, f in zip(base, block)], device


def test_block_times_against_a_python_model():
    base = [1e-3, 2e-3, 3e-3]
    et = einet.ETProfile(base, [1.0, 1.0, 1.0])
    rng = np.random.default_rng(2)
    observations = [(int(rng.integers(3)), float(rng.uniform(0.5e-3, 9e-3))) for _ in range(300)]
    estimate = BlockTimes(et, block_rate=0.05, device_rate=0.2, clip=4.0)
    for block, seconds in observations:
        estimate.observe(block, conv=seconds)
    expected, slowdown = python_block_times(base, observations, 0.05, 0.2, 4.0)
    assert np.allclose(estimate.profile().conv, expected) and estimate.slowdown == pytest.approx(slowdown)
    assert np.allclose(estimate.profile().branch, np.ones(3) * slowdown)  # the device factor moves every time


def test_block_times_track_a_slowdown_and_shrug_off_one_outlier():
    et = einet.ETProfile([1e-3] * 4, [2e-4] * 4)
    estimate = BlockTimes(et)
    for _ in range(60):  # the device runs twice as slow
        for i in range(4):
            estimate.observe(i, 2e-3, 4e-4)
    assert estimate.profile().total() == pytest.approx(2 * et.total(), rel=0.05)
    estimate.observe(0, conv=1.0)  # one block preempted for a second: bounded by the clip
    assert estimate.profile().total() < 2.5 * et.total()
    estimate.reset()
    assert estimate.profile().total() == pytest.approx(et.total())


def test_adaptation_plans_again_only_when_the_estimates_move_and_not_too_often():
    et = einet.ETProfile([1e-3] * 4, [2e-4] * 4)
    plans = []

    def policy_for(profile, dist):
        plans.append(profile.total())
        return EveryExit()

    adaptation = Adaptation(policy_for, et, einet.Uniform(0.0, et.total()), et.total(), every=5, gap=20,
                            learn_exits=False, background=False)
    same = [(i, 1e-3, 2e-4) for i in range(4)]
    for _ in range(100):
        adaptation.record(same, et.total(), False)
        if adaptation.pending():
            adaptation.update()
    assert adaptation.replans == 0 and len(plans) == 1
    slow = [(i, 3e-3, 6e-4) for i in range(4)]
    for _ in range(100):
        adaptation.record(slow, 3 * et.total(), False)
        if adaptation.pending():
            adaptation.update()
    assert 1 <= adaptation.replans <= 100 // 20 and plans[-1] > 2 * et.total()
    adaptation.reset()
    assert plans[-1] == pytest.approx(et.total())


def test_a_failed_background_plan_is_raised_by_the_next_update():
    et = einet.ETProfile([1e-3] * 2, [2e-4] * 2)
    calls = []

    def policy_for(profile, dist):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("planner failed")
        return EveryExit()

    adaptation = Adaptation(policy_for, et, einet.Uniform(0.0, et.total()), et.total(), every=1, gap=1,
                            learn_exits=False, background=True)
    adaptation.record([(0, 1.0, 1.0), (1, 1.0, 1.0)], 2.0, False)
    assert adaptation.update()
    adaptation._planner.join()
    with pytest.raises(RuntimeError, match="planner failed"):
        adaptation.update()


@pytest.mark.parametrize("load, switching", [("steady", False), ("switching", True)])
def test_burners_run_switch_and_stop(load, switching):
    from einet.runtime.stress import Burners

    with Burners.for_load(load, count=1, period=0.2, limit=30) as burners:
        time.sleep(0.7)
        process = burners._processes[0]
        assert process.poll() is None
    assert process.poll() is not None  # ended with the block
    assert (burners.switches >= 2) == switching


def test_burners_end_by_themselves():
    from einet.runtime.stress import Burners

    burners = Burners(1, limit=0.3).__enter__()
    burners._processes[0].wait(timeout=20)  # the burner's own limit ended it
    burners.__exit__(None, None, None)
    with pytest.raises(ValueError, match="unknown load"):
        Burners.for_load("storm")


CRASHING_CALLER = """
import sys, time
from einet.runtime.stress import Burners
with Burners(2, period=0.1, limit=600) as burners:
    print(*(p.pid for p in burners._processes), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, and PR_SET_PDEATHSIG")
def test_burners_die_with_a_killed_caller_even_while_stopped():
    import subprocess

    with subprocess.Popen([sys.executable, "-c", CRASHING_CALLER], stdout=subprocess.PIPE, text=True) as caller:
        pids = [int(pid) for pid in caller.stdout.readline().split()]
        _kill_while_a_burner_is_stopped(caller, pids)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_state(pid) not in (None, "Z") for pid in pids):
        time.sleep(0.05)
    assert all(_state(pid) in (None, "Z") for pid in pids)


def _state(pid):
    """A process's state letter (T: stopped, Z: a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _kill_while_a_burner_is_stopped(caller, pids):
    import os
    import signal

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _state(pids[0]) != "T":  # caught while switched off
        time.sleep(0.01)
    assert _state(pids[0]) == "T"
    os.kill(caller.pid, signal.SIGKILL)  # no __exit__: the burners are on their own
    caller.wait()


def test_switching_exit_times_switch():
    from einet.runtime.stress import switching_exit_times

    draws = switching_exit_times(einet.Deterministic(1.0), einet.Deterministic(2.0), 10, 4, np.random.default_rng(0))
    assert draws.tolist() == [1.0] * 4 + [2.0] * 6
    with pytest.raises(ValueError, match="within the stream"):
        switching_exit_times(einet.Deterministic(1.0), einet.Deterministic(2.0), 10, 11, np.random.default_rng(0))


def _slow_model(seconds, exits=4):
    torch = pytest.importorskip("torch")
    from torch import nn

    class Sleepy(nn.Module):
        """Blocks that take `seconds` each (a slowdown hook doubles them); branches answer class 0."""

        num_exits = exits

        def forward_block(self, i, h):
            time.sleep(seconds)
            return h

        def forward_exit(self, i, h):
            return torch.tensor([[2.0, 0.0]])

    return Sleepy()


@pytest.mark.parametrize("inline", [False, True])
def test_the_runtime_learns_a_slowdown_and_plans_for_it(inline):
    pytest.importorskip("torch")
    import torch

    from einet.policies import statistics_plan
    from einet.runtime import ElasticRuntime
    from einet.runtime.stress import Slowed

    et = einet.ETProfile([2e-3] * 4, [0.0] * 4)
    factor = {"now": 1.0}
    model = Slowed(_slow_model(2e-3), lambda: factor["now"])
    accuracies = [0.2, 0.4, 0.6, 0.9]

    def policy_for(profile, dist):
        return statistics_plan(accuracies, profile, dist)

    adaptation = Adaptation(policy_for, et, einet.Uniform(0.0, et.total()), et.total(), every=2, gap=4,
                            learn_exits=False, background=False)
    x = torch.zeros(1, 1)
    with ElasticRuntime(model, rule="latest", adapt=adaptation, inline=inline) as runtime:
        for _ in range(6):
            runtime.infer(x)
        assert adaptation.block_times.slowdown == pytest.approx(1.0, abs=0.5)
        factor["now"] = 3.0
        for _ in range(30):
            answer = runtime.infer(x)
            assert len(answer.block_times) == 4 and all(c > 0 for _, c, _ in answer.block_times)
        assert adaptation.block_times.slowdown > 2.0 and adaptation.replans >= 1
        assert runtime.adaptation is adaptation and runtime.policy is adaptation.policy
        assert runtime.profile is not None and runtime.profile.total() > 2 * et.total()
        runtime.reset_profile()
        assert runtime.profile.total() == pytest.approx(et.total()) and adaptation.block_times.slowdown == 1.0


def test_plan_for_deadline_needs_an_adaptive_runtime_and_a_deadline():
    pytest.importorskip("torch")
    import torch

    from einet.policies import FixedPlan, statistics_plan
    from einet.runtime import ElasticRuntime

    model = _slow_model(1e-4)
    x = torch.zeros(1, 1)
    with ElasticRuntime(model, FixedPlan([True] * 4, "all")) as runtime:
        with pytest.raises(ValueError, match="needs an adaptive runtime"):
            runtime.infer(x, 0.01, plan_for_deadline=True)
        assert runtime.profile is None
        with pytest.raises(ValueError, match="a static runtime learns nothing"):
            runtime.reset_profile()
    et = einet.ETProfile([1e-4] * 4, [0.0] * 4)
    adaptation = Adaptation(lambda p, d: statistics_plan([0.2, 0.4, 0.6, 0.9], p, d), et,
                            einet.Uniform(0.0, et.total()), et.total())
    with ElasticRuntime(model, adapt=adaptation) as runtime:
        with pytest.raises(ValueError, match="and a deadline"):
            runtime.infer(x, plan_for_deadline=True)
        answer = runtime.infer(x, 1.0, plan_for_deadline=True)  # all four blocks fit: the plan runs the last exit
        assert answer.exits_run[-1] == 3 and isinstance(runtime.last_policy, FixedPlan)
    with pytest.raises(TypeError, match="give a policy, or an Adaptation"):
        ElasticRuntime(model)
