"""The native engine (einet.runtime.native) against the Python loop it replaces, on the same compiled blocks:
on replayed block times the two make the same decisions and hold the same answers at every deadline, for
every policy it runs natively and every output rule; what it cannot run goes to the Python loop; where it
cannot run at all, a ValueError says why."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet.models import build, compiled  # noqa: E402
from einet.policies import EINet  # noqa: E402
from einet.policies.base import EveryExit  # noqa: E402
from einet.policies.fixed import FixedPlan  # noqa: E402
from einet.rules import AnswerRule  # noqa: E402
from einet.runtime import ElasticRuntime  # noqa: E402
from einet.runtime._statistics import Statistics  # noqa: E402
from einet.runtime._worker import BlockLoop, Job  # noqa: E402
from einet.runtime.replay import ReplayedLoop  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(compiled.compiler() is None, reason="no C++ compiler")]

CONV, BRANCH = [0.004, 0.003, 0.005], [0.001, 0.002, 0.001]  # the replayed seconds of each part


@pytest.fixture
def network(compiled_tiny):
    return compiled_tiny


def policies(num_exits):
    rng = np.random.default_rng(0)
    predictor = einet.NativePredictor([rng.normal(size=(8, 2 * num_exits)), rng.normal(size=(num_exits, 8))],
                                      [np.zeros(8), np.zeros(num_exits)], True)
    et = einet.ETProfile(CONV, BRANCH)
    dist = einet.Uniform(0.0, et.total())
    return {"every exit": lambda rule: EveryExit(),
            "fixed": lambda rule: FixedPlan([True, False, True], "fixed"),
            "EINet": lambda rule: EINet(predictor, et, dist, rule),
            "EINet hedged": lambda rule: EINet(predictor, et, dist, rule, first_plan=[False, True, True],
                                               margin=0.005)}


RULES = {"latest": AnswerRule("latest"), "best": AnswerRule("best"),
         "ensemble": AnswerRule("ensemble", (0.5, 1.0, 2.0)),
         "latest + time-zero": AnswerRule("latest", time_zero_class=3, time_zero_accuracy=0.1)}


def python_run(network, rule, policy, x, at):
    job = Job(x, policy, 0.0)
    return ReplayedLoop(network, rule, CONV, BRANCH).run(job, None, at), job


def native_run(network, rule, policy, x, at):
    from einet.runtime.native import NativeEngine, native_module

    fallback = BlockLoop(network, torch.device("cpu"), rule, Statistics())
    engine = NativeEngine(network, rule, Statistics(), native_module(), fallback)
    engine.replay = (CONV, BRANCH)
    job = Job(x, policy, 0.0)
    return engine.run(job, None, at), job


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("policy_name", ["every exit", "fixed", "EINet", "EINet hedged"])
def test_the_native_loop_holds_what_the_python_loop_holds_on_replayed_times(network, rule_name, policy_name):
    rule, make = RULES[rule_name], policies(network.num_exits)[policy_name]
    images = torch.randn(8, 1, 28, 28)
    for k in range(len(images)):
        for at in (0.0035, 0.0055, 0.0081, 0.0121, math.inf):  # before, inside and after each part
            x = images[k:k + 1]
            stopped_py, job_py = python_run(network, rule, make(rule), x, at)
            stopped_native, job_native = native_run(network, rule, make(rule), x, at)
            assert stopped_native == stopped_py
            assert [a[1:4] for a in job_native.answers] == [a[1:4] for a in job_py.answers]  # exits, held, class
            np.testing.assert_allclose([a[0] for a in job_native.answers], [a[0] for a in job_py.answers], atol=1e-12)
            np.testing.assert_allclose([a[4] for a in job_native.answers], [a[4] for a in job_py.answers],
                                       rtol=1e-6)  # (the confidence: float32 scores in both)
            assert [t[0] for t in job_native.times] == [t[0] for t in job_py.times]
            np.testing.assert_allclose([t[1:] for t in job_native.times], [t[1:] for t in job_py.times], atol=1e-12)
            assert job_native.in_flight == pytest.approx(job_py.in_flight) if job_py.in_flight else True


def test_a_native_runtime_answers_as_the_python_one_when_nothing_interrupts(network):
    x = torch.randn(1, 1, 28, 28)
    with ElasticRuntime(network, EveryExit(), inline=True, engine="native") as native, \
            ElasticRuntime(network, EveryExit(), inline=True) as python:
        a, b = native.infer(x), python.infer(x)
        assert (a.prediction, a.exit, a.exits_run, a.interrupted) == (b.prediction, b.exit, b.exits_run, False)
        assert len(a.block_times) == network.num_exits
        late = native.infer(x, interrupt=0.0)  # a deadline already passed: the time-zero answer (none)
        assert late.interrupted and late.prediction is None and late.exits_run == ()
        assert native.calibrate(einet.ETProfile([1e-3] * 3, [1e-4] * 3)).total() > 0  # its dispatch and plans count


def test_what_the_native_loop_cannot_run_goes_to_the_python_loop(network):
    x = torch.randn(1, 1, 28, 28)
    event = threading.Event()

    class Custom(EveryExit):  # a policy deciding in Python: neither a fixed plan nor EINet as they decide
        def observe(self, block, confidence, elapsed):
            return False

    with ElasticRuntime(network, EveryExit(), inline=True, engine="native") as runtime:
        assert runtime.infer(x, interrupt=event).exits_run == (0, 1, 2)  # an Event is asked between parts in Python
        runtime.policy = Custom()
        assert not runtime.engine.runs_natively(runtime.policy)
        assert runtime.infer(x).exits_run == (0, 1, 2)


def test_the_native_engine_where_it_cannot_run_is_a_value_error(network):
    model = build("b_alexnet", num_classes=10, in_channels=1, width=0.125).eval()
    with pytest.raises(ValueError, match="compiled blocks"):
        ElasticRuntime(model, EveryExit(), inline=True, engine="native")
    with pytest.raises(ValueError, match="engine must be one of"):
        ElasticRuntime(model, EveryExit(), inline=True, engine="c++")
