"""The real-time elastic runtime: answers, interrupts from every source, and policies."""

from __future__ import annotations

import gc
import math
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from einet.models import MultiExitNetwork  # noqa: E402
from einet.policies import Clairvoyant, ConfidenceThreshold, EveryExit, Policy, single_exit  # noqa: E402
from einet.runtime import ElasticRuntime  # noqa: E402


class Sleep(nn.Module):
    """A block that takes a known time and passes its input on."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, h):
        time.sleep(self.seconds)
        return h


class Constant(nn.Module):
    """An exit answering `label` with a fixed confidence."""

    def __init__(self, label: int, confidence: float) -> None:
        super().__init__()
        logits = torch.full((3,), -20.0)
        logits[label] = 0.0
        other = (label + 1) % 3
        logits[other] = float(np.log((1 - confidence) / confidence))
        self.register_buffer("logits", logits)

    def forward(self, h):
        return self.logits.expand(h.shape[0], 3)


def slow_model(block_seconds=0.02):
    blocks = [Sleep(block_seconds) for _ in range(4)]
    exits = [Constant(k % 3, c) for k, c in enumerate((0.5, 0.6, 0.97, 0.8))]
    return MultiExitNetwork(blocks, exits)


X = torch.zeros(1, 1)


def test_runs_to_completion_without_interrupt():
    answer = ElasticRuntime(slow_model(0.001), EveryExit()).infer(X)
    assert not answer.interrupted
    assert answer.exit == 3 and answer.prediction == 0 and answer.confidence == pytest.approx(0.8, abs=1e-4)
    assert answer.exits_run == (0, 1, 2, 3)


def test_finding_10_a_runtime_without_an_input_spec_takes_a_batch_of_one():
    with ElasticRuntime(slow_model(0.001), EveryExit()) as runtime:
        for shape in ((2, 1), (0, 1), ()):
            with pytest.raises(ValueError, match="a batch of one"):
                runtime.infer(torch.zeros(shape))
        assert runtime.infer(X).prediction is not None


def test_rule_best_returns_the_most_confident():
    answer = ElasticRuntime(slow_model(0.001), EveryExit(), rule="best").infer(X)
    assert answer.exit == 2 and answer.prediction == 2


def test_deadline_returns_the_held_answer_without_waiting_for_the_block():
    runtime = ElasticRuntime(slow_model(0.05), EveryExit())
    answer = runtime.infer(X, interrupt=0.125)  # blocks end at 0.05, 0.10, 0.15, ...
    assert answer.interrupted
    assert answer.exit == 1 and answer.exits_run == (0, 1)
    assert answer.elapsed < 0.125 + 0.015  # not the 0.15 s the block in flight would take
    runtime.close()


def test_nothing_held_before_the_first_branch():
    answer = ElasticRuntime(slow_model(0.05), EveryExit()).infer(X, interrupt=0.01)
    assert answer.interrupted and answer.prediction is None and answer.exit is None


def test_event_and_callable_interrupts():
    event = threading.Event()  # (blocks of 0.1 s, stops at 0.15 s: 50 ms either side for a loaded machine)
    # The runtimes are made first: the interrupts count from the call, not from making one (its eval copy of
    # the model takes a while on a loaded machine)
    first, second = ElasticRuntime(slow_model(0.1), EveryExit()), ElasticRuntime(slow_model(0.1), EveryExit())
    threading.Timer(0.15, event.set).start()
    answer = first.infer(X, interrupt=event)
    assert answer.interrupted and answer.exit == 0
    stop_at = time.perf_counter() + 0.15
    answer = second.infer(X, interrupt=lambda: time.perf_counter() >= stop_at)
    assert answer.interrupted and answer.exit == 0
    first.close()
    second.close()


def test_policies_drive_the_runtime():
    answer = ElasticRuntime(slow_model(0.001), single_exit(4)).infer(X)
    assert answer.exits_run == (3,)
    answer = ElasticRuntime(slow_model(0.001), ConfidenceThreshold(0.95)).infer(X)
    assert answer.exits_run == (0, 1, 2) and not answer.interrupted  # stopped early at 0.97


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown rule"):
        ElasticRuntime(slow_model(), EveryExit(), rule="first")
    import einet

    et = einet.ETProfile([1.0] * 4, [1.0] * 4)
    with pytest.raises(ValueError, match="can only be simulated"):
        ElasticRuntime(slow_model(), Clairvoyant(et, einet.Uniform(0, 8)))
    with pytest.raises(TypeError, match="interrupt must be"):
        ElasticRuntime(slow_model(0.001), EveryExit()).infer(X, interrupt="soon")


class Failing(nn.Module):
    def forward(self, h):
        raise RuntimeError("block failed")


def test_a_failing_block_raises_in_the_caller_and_the_runtime_stays_usable():
    model = MultiExitNetwork([Sleep(0.0), Failing()], [Constant(0, 0.9), Constant(1, 0.9)])
    runtime = ElasticRuntime(model, EveryExit())
    with pytest.raises(RuntimeError, match="block failed"):
        runtime.infer(X)
    with pytest.raises(RuntimeError, match="block failed"):
        runtime.infer(X)
    runtime.close()


def test_interrupted_planning_never_leaks_into_the_next_sample():
    import einet
    from einet.policies import EINet
    from einet.predictor import ConfidencePredictor

    et = einet.ETProfile([0.002] * 4, [0.001] * 4)
    policy = EINet(ConfidencePredictor(4, (8,)).to_native(), et, einet.Uniform(0, 0.012))
    with ElasticRuntime(slow_model(0.002), policy) as runtime:
        for k in range(60):  # interrupts at every phase of the inference
            answer = runtime.infer(X, interrupt=0.0005 * (k % 20))
            assert answer.exit is None or answer.exit in answer.exits_run


def test_calibrate_adds_what_the_runtime_costs():
    import einet

    runtime = ElasticRuntime(slow_model(0.002), EveryExit())
    with pytest.raises(ValueError, match="run some uninterrupted inferences"):
        runtime.calibrate(einet.ETProfile([0.002] * 4, [0.0] * 4))
    for _ in range(5):
        runtime.infer(X)
    et = einet.ETProfile([0.001] * 4, [0.0] * 4)  # claims half the real block time
    calibrated = runtime.calibrate(et)
    assert calibrated.conv[1] >= 0.0019  # the missing millisecond is found (sleep never returns early)
    assert calibrated.conv[0] > calibrated.conv[1]  # plus the hand-over to the worker
    stale = runtime.calibrate(einet.ETProfile([0.004] * 4, [0.0] * 4))  # claims twice the real block time
    assert stale.conv[1] <= 0.0035  # corrected down too
    runtime.close()


def test_rule_ensemble_holds_what_the_simulator_scores():
    from einet.formats.profiles import CSProfile
    from einet.rules import AnswerRule, held_correctness

    model = slow_model(0.001)
    weights = (0.5, 1.0, 0.2, 2.0)
    answer = ElasticRuntime(model, EveryExit(), rule=AnswerRule("ensemble", weights)).infer(X)
    log_probs = torch.stack([model.forward_exit(i, X).log_softmax(-1) for i in range(4)], 1).numpy()
    confidence = np.exp(log_probs.max(2))
    for label in range(3):  # the simulator says which label the final ensemble holds
        prediction = log_probs.argmax(2)
        cs = CSProfile(confidence, prediction, prediction == label, np.array([label]), {}, log_probs)
        held = held_correctness(np.arange(4)[None, :], cs, AnswerRule("ensemble", weights))
        assert held[0, -1] == (answer.prediction == label)
    assert answer.exit == 3


def test_time_zero_answer_is_held_before_the_first_branch():
    from einet.rules import AnswerRule

    rule = AnswerRule("latest", time_zero_class=2, time_zero_accuracy=0.4)
    answer = ElasticRuntime(slow_model(0.05), EveryExit(), rule=rule).infer(X, interrupt=0.01)
    assert answer.interrupted and answer.prediction == 2 and answer.exit is None
    answer = ElasticRuntime(slow_model(0.05), EveryExit()).infer(X, interrupt=0.01)
    assert answer.prediction is None


class Protocol(Policy):
    """Runs every branch and notes any step out of the protocol's order (begin, then blocks 0, 1, ...)."""

    def __init__(self) -> None:
        self.violations: list[tuple[int, int | None]] = []
        self.next: int | None = None

    def begin(self, oracle=None) -> None:
        self.next = 0

    def run_branch(self, block: int, elapsed: float) -> bool:
        if block != self.next:
            self.violations.append((block, self.next))
        self.next = block + 1
        return True


def test_concurrent_calls_from_several_threads_are_serialised():
    import einet
    from einet.policies import EINet
    from einet.predictor import ConfidencePredictor

    et = einet.ETProfile([0.002] * 4, [0.001] * 4)
    stateful = EINet(ConfidencePredictor(4, (8,)).to_native(), et, einet.Uniform(0, 0.012))
    for policy in (Protocol(), stateful):
        answers, errors = [], []
        with ElasticRuntime(slow_model(0.0005), policy) as runtime:

            def caller(k, runtime=runtime, answers=answers, errors=errors):
                for j in range(25):
                    try:
                        answers.append(runtime.infer(X, interrupt=0.002 if (j + k) % 3 == 0 else None))
                    except BaseException as error:  # reported below
                        errors.append(error)

            with ThreadPoolExecutor(4) as pool:  # four callers at once, each on its own thread
                list(pool.map(caller, range(4)))
        assert errors == [] and len(answers) == 100
        for answer in answers:
            assert answer.exit is None or answer.exit in answer.exits_run
            if not answer.interrupted:  # ran to its end: it holds an answer
                assert answer.prediction is not None and answer.exits_run
        if isinstance(policy, Protocol):
            assert policy.violations == []
            assert all(a.exits_run == (0, 1, 2, 3) for a in answers if not a.interrupted)


def test_a_call_waiting_for_another_threads_inference_keeps_its_own_deadline():
    from einet.rules import AnswerRule

    rule = AnswerRule("latest", time_zero_class=1, time_zero_accuracy=0.3)
    with ElasticRuntime(slow_model(0.1), EveryExit(), rule=rule) as runtime:
        long = []
        holder = threading.Thread(target=lambda: long.append(runtime.infer(X)))  # about 0.4 s
        holder.start()
        time.sleep(0.05)
        before = time.perf_counter()
        answer = runtime.infer(X, interrupt=0.02)
        took = time.perf_counter() - before
        holder.join()
    assert answer.interrupted and answer.prediction == 1 and answer.exit is None and answer.exits_run == ()
    assert 0.02 <= answer.elapsed <= took < 0.25
    assert not long[0].interrupted and long[0].exits_run == (0, 1, 2, 3)


class SlowOnce(nn.Module):
    """A block slow on its first call only."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, h):
        seconds, self.seconds = self.seconds, 0.0
        time.sleep(seconds)
        return h


def test_a_deadline_counts_from_the_call_while_the_previous_block_is_in_flight():
    from einet.rules import AnswerRule

    rule = AnswerRule("latest", time_zero_class=2, time_zero_accuracy=0.4)
    model = MultiExitNetwork([SlowOnce(1.0), Sleep(0.001)], [Constant(0, 0.9), Constant(1, 0.9)])
    with ElasticRuntime(model, EveryExit(), rule=rule) as runtime:
        first = runtime.infer(X, interrupt=0.01)  # returns; its first block goes on for about 1 s
        assert first.interrupted and first.prediction == 2 and first.exit is None
        before = time.perf_counter()
        second = runtime.infer(X, interrupt=0.005)
        took = time.perf_counter() - before
        assert second.interrupted and second.prediction == 2 and second.exit is None and second.exits_run == ()
        assert 0.005 <= second.elapsed <= took < 0.5  # not the rest of the block in flight
        event = threading.Event()
        threading.Timer(0.01, event.set).start()
        third = runtime.infer(X, interrupt=event)  # the same for the other interrupts
        assert third.interrupted and third.prediction == 2 and third.elapsed < 0.5
        last = runtime.infer(X)  # waits for that block, then runs to the end
        assert not last.interrupted and last.exit == 1 and last.exits_run == (0, 1)


def test_an_inference_ending_after_its_deadline_is_interrupted_even_when_the_caller_looks_late(monkeypatch):
    with ElasticRuntime(slow_model(0.02), EveryExit()) as runtime:  # branches end at 0.02, 0.04, 0.06, 0.08 s
        submit = runtime._driver.worker.submit

        def submit_then_stall(job):  # the caller is descheduled until after the inference has ended
            submit(job)
            job.wait(5.0)

        monkeypatch.setattr(runtime._driver.worker, "submit", submit_then_stall)
        answer = runtime.infer(X, interrupt=0.05)
        assert answer.interrupted and answer.exit == 1 and answer.exits_run == (0, 1)  # what was held at 0.05 s
        event = threading.Event()
        threading.Timer(0.01, event.set).start()  # (the inference ends at 0.08 s)
        assert runtime.infer(X, interrupt=event).interrupted  # it had fired when the end was seen
        assert runtime.infer(X, interrupt=lambda: True).interrupted
        assert not runtime.infer(X, interrupt=threading.Event()).interrupted
        assert not runtime.infer(X, interrupt=lambda: False).interrupted


def test_deadlines_of_any_real_type():
    with ElasticRuntime(slow_model(0.001), EveryExit()) as runtime:
        for none in (math.inf, 1e300, 10 ** 400, np.float64(np.inf), np.float32(np.inf), 2 * threading.TIMEOUT_MAX):
            answer = runtime.infer(X, interrupt=none)
            assert not answer.interrupted and answer.exits_run == (0, 1, 2, 3), none
        for seconds in (np.float32(30.0), np.float64(30.0), np.int64(30), Fraction(30), 30):
            answer = runtime.infer(X, interrupt=seconds)
            assert not answer.interrupted and answer.exits_run == (0, 1, 2, 3), seconds
        for zero in (0, 0.0, -0.0, np.float32(0.0)):
            answer = runtime.infer(X, interrupt=zero)
            assert answer.interrupted and answer.prediction is None, zero
        for bad, error, match in ((math.nan, ValueError, "NaN"), (np.float32("nan"), ValueError, "NaN"),
                                  (-0.001, ValueError, "negative"), (-math.inf, ValueError, "negative"),
                                  (np.int64(-1), ValueError, "negative"), (True, TypeError, "bool"),
                                  (np.bool_(True), TypeError, "interrupt must be")):
            with pytest.raises(error, match=match):
                runtime.infer(X, interrupt=bad)
        assert runtime.infer(X, interrupt=10.0).exits_run == (0, 1, 2, 3)


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, h):
        self.calls += 1
        return h


def test_a_bad_interrupt_is_refused_before_anything_runs():
    begun = []

    class Recording(EveryExit):
        def begin(self, oracle=None) -> None:
            begun.append(True)

    block = Counting()
    model = MultiExitNetwork([block, Sleep(0.0)], [Constant(0, 0.9), Constant(1, 0.9)]).eval()  # run as it is
    runtime = ElasticRuntime(model, Recording())
    for bad in ("soon", True, math.nan, -1.0, object()):
        with pytest.raises((TypeError, ValueError)):
            runtime.infer(X, interrupt=bad)
    runtime.close()  # waits for the worker: whatever had been started has run by now
    assert block.calls == 0 and begun == []
    with ElasticRuntime(model, Recording()) as runtime:
        assert runtime.infer(X).exits_run == (0, 1) and block.calls == 1


class FailsLate(nn.Module):
    """Fails after `seconds`, on its first call only."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, h):
        seconds, self.seconds = self.seconds, None
        if seconds is None:
            return h
        time.sleep(seconds)
        raise RuntimeError("block failed")


def test_a_worker_error_after_the_caller_returned_surfaces_at_the_next_call_or_close():
    def model():
        return MultiExitNetwork([FailsLate(0.2), Sleep(0.0)], [Constant(0, 0.9), Constant(1, 0.9)])

    with ElasticRuntime(model(), EveryExit()) as runtime:
        answer = runtime.infer(X, interrupt=0.01)  # the block fails later, in flight
        assert answer.interrupted and answer.prediction is None
        raised = 0
        for _ in range(2):  # the next call raises it, or, if it has not happened yet, the one after
            try:
                assert runtime.infer(X).exits_run == (0, 1)
            except RuntimeError as error:
                assert "block failed" in str(error)
                raised += 1
        assert raised == 1
        assert runtime.infer(X).exits_run == (0, 1)  # and the runtime goes on
    runtime = ElasticRuntime(model(), EveryExit())
    assert runtime.infer(X, interrupt=0.01).interrupted
    with pytest.raises(RuntimeError, match="block failed"):
        runtime.close()
    runtime.close()  # once only
    with pytest.raises(RuntimeError, match="closed"):
        runtime.infer(X)


def test_the_switch_interval_is_lowered_while_any_runtime_is_open():
    from einet.runtime import SWITCH_INTERVAL

    gc.collect()  # runtimes of earlier tests, left unclosed, give it back when collected
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default
    try:
        first = ElasticRuntime(slow_model(0.001), EveryExit())
        lowered = sys.getswitchinterval()
        assert lowered <= SWITCH_INTERVAL
        second = ElasticRuntime(slow_model(0.001), EveryExit())
        first.close()
        assert sys.getswitchinterval() == lowered  # the second is still open
        second.close()
        assert sys.getswitchinterval() == 0.005
        third = ElasticRuntime(slow_model(0.001), EveryExit())
        assert sys.getswitchinterval() == lowered
        del third  # unclosed
        gc.collect()
        assert sys.getswitchinterval() == 0.005
    finally:
        sys.setswitchinterval(previous)


def test_a_runtime_asked_not_to_leaves_the_switch_interval_alone():
    gc.collect()
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        with ElasticRuntime(slow_model(0.001), EveryExit(), lower_switch_interval=False) as runtime:
            assert runtime.infer(X).exit == 3
            assert sys.getswitchinterval() == 0.005
        with ElasticRuntime(slow_model(0.001), EveryExit(), inline=True):  # no second thread: nothing to lower
            assert sys.getswitchinterval() == 0.005
        assert sys.getswitchinterval() == 0.005
        with pytest.raises(TypeError, match="lower_switch_interval"):
            ElasticRuntime(slow_model(0.001), EveryExit(), lower_switch_interval=0)
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.parametrize("inline", [False, True])
def test_the_callers_model_keeps_its_training_mode_and_device(inline):
    model = slow_model(0.001).train()
    with ElasticRuntime(model, EveryExit(), inline=inline) as runtime:
        assert runtime.infer(X).exit == 3
        assert runtime.model is not model and not runtime.model.training
    assert model.training and all(module.training for module in model.modules())


def test_the_callers_model_stays_on_its_device():
    model = slow_model(0.001)
    with ElasticRuntime(model, EveryExit(), device="meta") as runtime:  # (never run: "meta" has no data)
        assert runtime.model.exits[0].logits.device.type == "meta"
    assert model.exits[0].logits.device.type == "cpu"


def test_a_model_ready_to_run_is_run_as_it_is():
    model = slow_model(0.001).eval()
    with ElasticRuntime(model, EveryExit()) as runtime:
        assert runtime.model is model


def test_an_unclosed_runtime_stops_its_worker_when_collected():
    before = set(threading.enumerate())
    runtime = ElasticRuntime(slow_model(0.001), EveryExit())
    assert runtime.infer(X).exits_run == (0, 1, 2, 3)
    (worker,) = [t for t in threading.enumerate() if t not in before and t.name == "einet-runtime"]
    assert worker.daemon
    del runtime
    gc.collect()
    worker.join(10.0)
    assert not worker.is_alive()


UNCLOSED = textwrap.dedent("""
    import torch
    from torch import nn
    from einet.policies import EveryExit, Policy
    from einet.models import MultiExitNetwork
    from einet.runtime import ElasticRuntime

    class Busy(nn.Module):  # work inside torch while the interpreter exits
        def forward(self, h):
            a = torch.randn(600, 600)
            for _ in range(30):
                a = a @ a
                a = a / a.norm()
            return h

    class Head(nn.Module):
        def forward(self, h):
            return torch.zeros(h.shape[0], 3)

    busy = ElasticRuntime(MultiExitNetwork([Busy(), Busy()], [Head(), Head()]), EveryExit(), threads=2)
    idle = ElasticRuntime(MultiExitNetwork([Busy()], [Head()]), EveryExit())
    print(busy.infer(torch.zeros(1, 1), interrupt=0.01).interrupted)
""")


def test_exiting_without_close_with_a_block_in_flight_exits_cleanly():
    result = subprocess.run([sys.executable, "-c", UNCLOSED], capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr, result.stdout.strip()) == (0, "", "True")


@pytest.mark.slow
@pytest.mark.parametrize("inline", [False, True])
def test_runtime_agrees_with_the_simulator_at_the_same_deadlines(inline):
    """The one real-time check, paired: each sample's runtime answer against the simulator's at its own
    deadline. Only timing may part them (a deadline within scheduling jitter of a branch's end)."""
    import einet
    from einet.formats.profiles import CSProfile
    from einet.runtime.realtime import check_against_simulator

    model, samples = slow_model(0.02), 40
    labels = np.random.default_rng(0).integers(0, 3, samples)
    prediction = np.tile(np.arange(4) % 3, (samples, 1))
    confidence = np.tile([0.5, 0.6, 0.97, 0.8], (samples, 1))
    cs = CSProfile(confidence, prediction, prediction == labels[:, None], labels, {})
    deadlines = np.random.default_rng(1).uniform(0.0, 0.09, samples)
    images = torch.zeros(samples, 1)
    with ElasticRuntime(model, EveryExit(), inline=inline) as runtime:
        check = check_against_simulator(runtime, lambda et: EveryExit(), einet.ETProfile([0.02] * 4, [0.0] * 4), cs,
                                        images, deadlines, warmup=5, uninterrupted=5)
    assert check.report.samples == samples and check.simulated.shape == (samples,)
    assert check.simulated.mean() > 0.1  # the answers depend on the deadline: not trivially equal
    assert abs(check.difference) <= 0.1, (check.report.correct, check.simulated)
    assert check.ci95 <= 0.15
    with ElasticRuntime(model, EveryExit()) as runtime, pytest.raises(ValueError, match="one image, deadline"):
        check_against_simulator(runtime, lambda et: EveryExit(), einet.ETProfile([0.02] * 4, [0.0] * 4), cs,
                                images, deadlines[:-1])


# --------------------------------------------------------------------------- inline: no worker thread


def test_an_inline_runtime_answers_as_the_threaded_one_when_nothing_interrupts():
    model = slow_model(0.0)
    with ElasticRuntime(model, EveryExit(), rule="best") as threaded, \
            ElasticRuntime(model, EveryExit(), rule="best", inline=True) as inline:
        a, b = threaded.infer(X), inline.infer(X)
    assert (a.prediction, a.exit, a.exits_run, a.interrupted) == (b.prediction, b.exit, b.exits_run, b.interrupted)
    assert b.exits_run == (0, 1, 2, 3) and len(b.block_times) == 4


def test_an_inline_deadline_keeps_the_answer_held_then_and_returns_after_the_block_in_flight():
    block = 0.03
    with ElasticRuntime(slow_model(block), EveryExit(), inline=True) as runtime:
        answer = runtime.infer(X, interrupt=1.5 * block)  # fires during block 1: only exit 0 had answered
    assert answer.interrupted and answer.exits_run == (0,) and answer.exit == 0
    assert answer.elapsed >= 2 * block  # block 1 was not interrupted: the call returned once it ended
    assert answer.block_times[-1][0] == 1 and math.isnan(answer.block_times[-1][2])  # its branch never ran


def test_an_inline_runtime_stops_between_blocks_on_an_event_or_a_callable():
    event = threading.Event()
    with ElasticRuntime(slow_model(0.02), EveryExit(), inline=True) as runtime:
        timer = threading.Timer(0.03, event.set)
        timer.start()
        by_event = runtime.infer(X, interrupt=event)
        timer.join()
        asked = []
        by_callable = runtime.infer(X, interrupt=lambda: asked.append(1) or len(asked) > 2)
    assert by_event.interrupted and by_event.exits_run in ((0,), (0, 1))
    assert by_callable.interrupted and len(by_callable.exits_run) < 4


def test_an_inline_runtime_reports_a_stop_by_an_interrupt_that_has_fired_and_cleared():
    asked = []  # an edge-triggered callable: True once (the third time it is asked), False after
    with ElasticRuntime(slow_model(0.0), EveryExit(), inline=True) as runtime:
        answer = runtime.infer(X, interrupt=lambda: asked.append(1) or len(asked) == 3)
        runtime_statistics = len(runtime._statistics.answers)
    assert answer.interrupted and len(answer.exits_run) < 4
    assert runtime_statistics == 0  # a stopped sample's answers do not calibrate the runtime


def test_an_inline_runtime_refuses_threads_and_a_closed_runtime_refuses_work():
    with pytest.raises(ValueError, match="caller's thread"):
        ElasticRuntime(slow_model(0.0), EveryExit(), threads=2, inline=True)
    runtime = ElasticRuntime(slow_model(0.0), EveryExit(), inline=True)
    assert runtime.wait_idle(0.0)
    runtime.close()
    with pytest.raises(RuntimeError, match="closed"):
        runtime.infer(X)


def test_an_inline_runtime_raises_the_models_error_in_the_call():
    class Broken(nn.Module):
        def forward(self, h):
            raise RuntimeError("broken block")

    model = MultiExitNetwork([Sleep(0.0), Broken()], [Constant(0, 0.9), Constant(1, 0.9)])
    with ElasticRuntime(model, EveryExit(), inline=True) as runtime:
        with pytest.raises(RuntimeError, match="broken block"):
            runtime.infer(X)
        with pytest.raises(RuntimeError, match="broken block"):  # usable again: the same error, raised again
            runtime.infer(X)


def test_an_inline_runtime_learns_the_part_in_flight_at_an_interrupt_as_a_lower_bound():
    class Recorder:  # what an Adaptation is told, and nothing learnt
        policy, records = EveryExit(), []

        def record(self, times, end, interrupted, in_flight=None):
            self.records.append((times, end, interrupted, in_flight))

        def pending(self):
            return False

    block, recorder = 0.03, Recorder()
    with ElasticRuntime(slow_model(block), adapt=recorder, inline=True) as runtime:
        runtime.infer(X, interrupt=1.5 * block)  # block 1's conv part is in flight at the deadline
    times, end, interrupted, in_flight = recorder.records[0]
    assert interrupted and end == pytest.approx(1.5 * block)
    assert [part[0] for part in times] == [0]  # block 1 ended after the deadline: not learnt as a whole time
    assert in_flight[:2] == (1, False) and 0 < in_flight[2] < 0.6 * block  # but as a lower bound


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"inline": "no"}, TypeError, "inline must be True or False"),
    ({"inline": None}, TypeError, "inline must be True or False"),
    ({"threads": 0}, ValueError, "threads"),
    ({"threads": "2"}, TypeError, "threads"),
    ({"inline": True, "device": "cuda"}, ValueError, "CPU only"),
])
def test_runtime_options_are_checked_before_anything_starts(options, error, message):
    before = threading.active_count()
    with pytest.raises(error, match=message):
        ElasticRuntime(slow_model(0.0), EveryExit(), **options)
    assert threading.active_count() == before  # no worker was started


def test_an_inline_runtime_keeps_a_failed_update_for_the_next_call():
    class Failing:  # an Adaptation whose learning fails
        policy = EveryExit()

        def record(self, times, end, interrupted, in_flight=None):
            pass

        def pending(self):
            return True

        def update(self):
            raise RuntimeError("learning failed")

    with ElasticRuntime(slow_model(0.0), adapt=Failing(), inline=True) as runtime:
        assert runtime.infer(X).exits_run == (0, 1, 2, 3)  # the answer made is returned
        with pytest.raises(RuntimeError, match="learning failed"):
            runtime.infer(X)


# --------------------------------------------------------------------------- answers are immutable


@pytest.mark.parametrize("inline", [False, True])
def test_an_answer_does_not_change_after_it_is_returned_and_completed_adds_the_block_in_flight(inline):
    block = 0.03
    with ElasticRuntime(slow_model(block), EveryExit(), inline=inline) as runtime:
        answer = runtime.infer(X, interrupt=1.5 * block)  # during block 1
        seen = answer.block_times
        assert isinstance(seen, tuple)
        runtime.wait_idle()
        assert answer.block_times == seen  # the block in flight ended since: the answer is as it was returned
        done = runtime.completed(answer)
        assert done.block_times[-1][0] == 1 and math.isnan(done.block_times[-1][2])  # its branch never ran
        assert (done.prediction, done.exit, done.exits_run, done.interrupted) == \
            (answer.prediction, answer.exit, answer.exits_run, answer.interrupted)
        if not inline:  # threaded, the call returned before block 1 ended
            assert len(seen) == 1 and len(done.block_times) == 2
        later = runtime.infer(X)
        with pytest.raises(ValueError, match="only the latest answer"):
            runtime.completed(answer)
        assert runtime.completed(later).block_times == later.block_times
