"""One suite for every engine and driver (docs/design.md section 8): the Python loop and the native loop, each
in the caller's thread and on a worker, keep the runtime's one contract on the same compiled blocks."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet.policies import EINet  # noqa: E402
from einet.policies.base import EveryExit  # noqa: E402
from einet.policies.fixed import FixedPlan  # noqa: E402
from einet.runtime import ElasticRuntime, NonFiniteError  # noqa: E402
from einet.runtime.adaptive import Adaptation  # noqa: E402

pytestmark = pytest.mark.slow

MODES = {"python inline": ("python", True), "python threaded": ("python", False),
         "native inline": ("native", True), "native threaded": ("native", False)}


@pytest.fixture(params=list(MODES))
def mode(request):
    return MODES[request.param]


def runtime(network, mode, policy=None, **options):
    engine, inline = mode
    return ElasticRuntime(network, EveryExit() if policy is None else policy, engine=engine, inline=inline, **options)


def images(count, seed=0):
    return torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def reference(network, x, policy):
    """What the Python loop in the caller's thread answers with nothing interrupting."""
    with runtime(network, MODES["python inline"], policy) as python:
        return python.infer(x)


def test_every_mode_runs_its_engine(compiled_tiny, mode):
    from einet.runtime.native import NativeEngine

    with runtime(compiled_tiny, mode) as rt:
        assert isinstance(rt.engine, NativeEngine) == (mode[0] == "native")


@pytest.mark.parametrize("plan", [None, [True, False, True], [False, False, True]])
def test_uninterrupted_answers_are_the_same_in_every_mode(compiled_tiny, mode, plan):
    policy = EveryExit() if plan is None else FixedPlan(plan, "fixed")
    with runtime(compiled_tiny, mode, policy) as rt:
        for k, x in enumerate(images(4).split(1)):
            a, b = rt.infer(x), reference(compiled_tiny, x, policy)
            assert (a.prediction, a.exit, a.exits_run, a.interrupted) == (b.prediction, b.exit, b.exits_run, False), k
            assert a.confidence == pytest.approx(b.confidence, rel=1e-5)
            assert len(a.block_times) == compiled_tiny.num_exits


def test_a_passed_deadline_gives_the_time_zero_answer(compiled_tiny, mode):
    with runtime(compiled_tiny, mode) as rt:
        answer = rt.infer(images(1), interrupt=0.0)
        assert answer.interrupted and answer.prediction is None and answer.exit is None and answer.exits_run == ()


def test_an_interrupted_answer_is_the_one_held_when_it_fired(compiled_tiny, mode):
    """The answer held at the deadline: what the exits that had finished by then make under the rule."""
    x = images(1, seed=1)
    with runtime(compiled_tiny, mode) as rt:
        full = rt.infer(x)
        first = full.block_times[0][1] + full.block_times[0][2]
        for deadline in (first / 2, 3 * first, 1e-9):
            answer = rt.infer(x, interrupt=deadline)
            rt.wait_idle()
            assert answer.exits_run == full.exits_run[:len(answer.exits_run)]
            if answer.exits_run:
                assert answer.exit == answer.exits_run[-1]  # rule latest
            if answer.interrupted:
                assert len(answer.exits_run) < compiled_tiny.num_exits


@pytest.mark.parametrize("kind", ["event", "callable"])
def test_an_event_or_a_callable_interrupt_stops_the_sample(compiled_tiny, mode, kind):
    with runtime(compiled_tiny, mode) as rt:
        fired = threading.Event()
        fired.set()
        answer = rt.infer(images(1), interrupt=fired if kind == "event" else fired.is_set)
        assert answer.interrupted and answer.exits_run == () and answer.prediction is None
        rt.wait_idle()
        calls = []

        def after_two_asks():
            calls.append(1)
            return len(calls) > 2

        answer = rt.infer(images(1), interrupt=after_two_asks)
        rt.wait_idle()
        assert answer.exits_run == tuple(range(len(answer.exits_run)))  # whatever ran before it fired, in order
        assert rt.infer(images(1)).exits_run == (0, 1, 2)  # and the runtime goes on


def test_an_answer_does_not_change_and_completed_adds_the_part_in_flight(compiled_tiny, mode):
    with runtime(compiled_tiny, mode) as rt:
        answer = rt.infer(images(1), interrupt=1e-9)
        assert rt.wait_idle() is True and rt.wait_idle(0.0) is True  # (no limit: it waits for the part in flight)
        before = dataclasses.astuple(answer)
        done = rt.completed(answer)
        assert dataclasses.astuple(answer) == before  # immutable
        assert len(done.block_times) >= len(answer.block_times)
        assert all(math.isfinite(t[1]) for t in done.block_times)
        with pytest.raises(ValueError, match="latest answer"):
            rt.completed(dataclasses.replace(answer))


def test_non_finite_scores_are_refused_and_the_runtime_goes_on(compiled_tiny, mode):
    # (an input of 1e38 overflows to NaN scores; the compiled blocks' fused ReLU maps a NaN input itself to
    # finite scores, which no check after block 0 can see)
    with runtime(compiled_tiny, mode) as rt:
        with pytest.raises(NonFiniteError, match="non-finite"):
            rt.infer(torch.full((1, 1, 28, 28), 1e38))
        assert rt.infer(images(1)).exits_run == (0, 1, 2)


def test_the_runtime_measures_what_it_adds_and_an_adaptive_one_learns(compiled_tiny, mode):
    et = einet.ETProfile([1.0] * 3, [0.1] * 3)  # far from the real times: learning must move it
    adaptation = Adaptation(lambda profile, dist: EveryExit(), et, einet.Uniform(0.0, et.total()), et.total(),
                            every=1, gap=1, learn_exits=False, background=False)
    engine, inline = mode
    with ElasticRuntime(compiled_tiny, adapt=adaptation, engine=engine, inline=inline) as rt:
        for x in images(24).split(1):
            rt.infer(x)
            rt.wait_idle()  # (what a sample taught is learnt once the runtime is idle: each one, one at a time)
        assert rt.profile is not None and rt.profile.total() < et.total() / 2
        assert len(rt.dispatch_seconds) == 24
    with runtime(compiled_tiny, mode) as rt:
        for x in images(5).split(1):
            rt.infer(x)
        rt.wait_idle()
        assert rt.calibrate(einet.ETProfile([1e-3] * 3, [1e-4] * 3)).total() > 0


def test_einet_plans_in_every_mode(compiled_tiny, mode):
    rng = np.random.default_rng(0)
    predictor = einet.NativePredictor([rng.normal(size=(8, 6)), rng.normal(size=(3, 8))], [np.zeros(8), np.zeros(3)],
                                      True)
    et = einet.ETProfile([1e-4] * 3, [1e-5] * 3)
    with runtime(compiled_tiny, mode, EINet(predictor, et, einet.Uniform(0.0, et.total()))) as rt:
        assert rt.engine.runs_natively(rt.policy) if mode[0] == "native" else True
        for x in images(6).split(1):
            answer = rt.infer(x)
            assert not answer.interrupted and list(answer.exits_run) == sorted(set(answer.exits_run))
        rt.wait_idle()
        assert len(rt.planning_seconds) > 0  # it re-planned after the branches it ran, and the runtime counted it


def test_a_closed_runtime_refuses_work(compiled_tiny, mode):
    rt = runtime(compiled_tiny, mode)
    rt.infer(images(1), interrupt=1e-9)
    rt.close()
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        rt.infer(images(1))


def test_samples_the_native_loop_cannot_run_go_to_the_python_loop(compiled_tiny, mode):
    class Custom(EveryExit):  # deciding in Python: neither a fixed plan nor EINet as they decide
        def observe(self, block, confidence, elapsed):
            return False

    with runtime(compiled_tiny, mode) as rt:
        for k, x in enumerate(images(6).split(1)):
            rt.policy = Custom() if k % 2 else EveryExit()
            assert rt.engine.runs_natively(rt.policy) == (mode[0] == "native" and k % 2 == 0) \
                if mode[0] == "native" else True
            answer = rt.infer(x, interrupt=1e-9 if k == 3 else None)
            assert answer.exits_run == (() if k == 3 else (0, 1, 2)) or k == 3


def test_a_runtime_is_inline_by_default_where_the_native_engine_runs_short_parts(compiled_tiny):
    from einet.runtime import INLINE_PART_SECONDS, inline_by_default

    short = einet.ETProfile([INLINE_PART_SECONDS] * 3, [1e-5] * 3)
    long = einet.ETProfile([1e-4, 2 * INLINE_PART_SECONDS, 1e-4], [1e-5] * 3)
    assert inline_by_default(compiled_tiny, "cpu", "auto", short)
    assert inline_by_default(compiled_tiny, "cpu", "native", short)
    assert not inline_by_default(compiled_tiny, "cpu", "auto", long)  # a part too long: a worker answers sooner
    assert not inline_by_default(compiled_tiny, "cpu", "python", short)  # the Python loop's parts cost more
    model = einet.build("b_alexnet", num_classes=10, in_channels=1, width=0.125).eval()
    assert not inline_by_default(model, "cpu", "auto", short)  # not compiled: no native engine


def test_a_bundle_runtime_chooses_its_driver_by_that_rule(compiled_bundle):
    from einet.bundle import read_bundle
    from einet.runtime._drivers import InlineDriver
    from einet.runtime.native import NativeEngine

    bundle = read_bundle(compiled_bundle)
    et = bundle.et(bundle.entry("cpu")).profile
    expected = max(et.conv.max(), et.branch.max()) <= einet.runtime.INLINE_PART_SECONDS
    with einet.load(compiled_bundle) as rt, einet.load(compiled_bundle, inline=False) as threaded, \
            einet.load(compiled_bundle, engine="python") as python:
        assert isinstance(rt.engine, NativeEngine) and isinstance(rt._driver, InlineDriver) == expected
        assert not isinstance(threaded._driver, InlineDriver) and not isinstance(python._driver, InlineDriver)
        assert rt.infer(rt.prepare(np.zeros((28, 28, 1), np.uint8))).exits_run
