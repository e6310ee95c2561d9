"""The real-time elastic runtime: answers, interrupts from every source, and policies."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from einet.baselines import Clairvoyant, ConfidenceThreshold, Policy, single_exit  # noqa: E402
from einet.models import MultiExitNetwork  # noqa: E402
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
    answer = ElasticRuntime(slow_model(0.001), Policy()).infer(X)
    assert not answer.interrupted
    assert answer.exit == 3 and answer.prediction == 0 and answer.confidence == pytest.approx(0.8, abs=1e-4)
    assert answer.exits_run == (0, 1, 2, 3)


def test_rule_best_returns_the_most_confident():
    answer = ElasticRuntime(slow_model(0.001), Policy(), rule="best").infer(X)
    assert answer.exit == 2 and answer.prediction == 2


def test_deadline_returns_the_held_answer_without_waiting_for_the_block():
    runtime = ElasticRuntime(slow_model(0.05), Policy())
    answer = runtime.infer(X, interrupt=0.125)  # blocks end at 0.05, 0.10, 0.15, ...
    assert answer.interrupted
    assert answer.exit == 1 and answer.exits_run == (0, 1)
    assert answer.elapsed < 0.125 + 0.015  # not the 0.15 s the block in flight would take
    runtime.close()


def test_nothing_held_before_the_first_branch():
    answer = ElasticRuntime(slow_model(0.05), Policy()).infer(X, interrupt=0.01)
    assert answer.interrupted and answer.prediction is None and answer.exit is None


def test_event_and_callable_interrupts():
    event = threading.Event()
    threading.Timer(0.075, event.set).start()
    answer = ElasticRuntime(slow_model(0.05), Policy()).infer(X, interrupt=event)
    assert answer.interrupted and answer.exit == 0
    stop_at = time.perf_counter() + 0.075
    answer = ElasticRuntime(slow_model(0.05), Policy()).infer(X, interrupt=lambda: time.perf_counter() >= stop_at)
    assert answer.interrupted and answer.exit == 0


def test_policies_drive_the_runtime():
    answer = ElasticRuntime(slow_model(0.001), single_exit(4)).infer(X)
    assert answer.exits_run == (3,)
    answer = ElasticRuntime(slow_model(0.001), ConfidenceThreshold(0.95)).infer(X)
    assert answer.exits_run == (0, 1, 2) and not answer.interrupted  # stopped early at 0.97


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown rule"):
        ElasticRuntime(slow_model(), Policy(), rule="first")
    import einet

    et = einet.ETProfile([1.0] * 4, [1.0] * 4)
    with pytest.raises(ValueError, match="can only be simulated"):
        ElasticRuntime(slow_model(), Clairvoyant(et, einet.Uniform(0, 8)))
    with pytest.raises(TypeError, match="interrupt must be"):
        ElasticRuntime(slow_model(0.001), Policy()).infer(X, interrupt="soon")


class Failing(nn.Module):
    def forward(self, h):
        raise RuntimeError("block failed")


def test_a_failing_block_raises_in_the_caller_and_the_runtime_stays_usable():
    model = MultiExitNetwork([Sleep(0.0), Failing()], [Constant(0, 0.9), Constant(1, 0.9)])
    runtime = ElasticRuntime(model, Policy())
    with pytest.raises(RuntimeError, match="block failed"):
        runtime.infer(X)
    with pytest.raises(RuntimeError, match="block failed"):
        runtime.infer(X)
    runtime.close()


def test_interrupted_planning_never_leaks_into_the_next_sample():
    import einet
    from einet.baselines import EINet
    from einet.predictor import ConfidencePredictor

    et = einet.ETProfile([0.002] * 4, [0.001] * 4)
    policy = EINet(ConfidencePredictor(4, (8,)).to_native(), et, einet.Uniform(0, 0.012))
    with ElasticRuntime(slow_model(0.002), policy) as runtime:
        for k in range(60):  # interrupts at every phase of the inference
            answer = runtime.infer(X, interrupt=0.0005 * (k % 20))
            assert answer.exit is None or answer.exit in answer.exits_run


def test_calibrate_adds_what_the_runtime_costs():
    import einet

    runtime = ElasticRuntime(slow_model(0.002), Policy())
    with pytest.raises(ValueError, match="run some uninterrupted inferences"):
        runtime.calibrate(einet.ETProfile([0.002] * 4, [0.0] * 4))
    for _ in range(5):
        runtime.infer(X)
    et = einet.ETProfile([0.001] * 4, [0.0] * 4)  # claims half the real block time
    calibrated = runtime.calibrate(et)
    assert calibrated.conv[1] >= 0.0019  # the missing millisecond is found (sleep never returns early)
    assert calibrated.conv[0] > calibrated.conv[1]  # plus the hand-over to the worker
    runtime.close()


def test_rule_ensemble_holds_what_the_simulator_scores():
    from einet.profiling import CSProfile
    from einet.rules import AnswerRule, held_correctness

    model = slow_model(0.001)
    weights = (0.5, 1.0, 0.2, 2.0)
    answer = ElasticRuntime(model, Policy(), rule=AnswerRule("ensemble", weights)).infer(X)
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

    rule = AnswerRule("latest", prior_class=2, prior_accuracy=0.4)
    answer = ElasticRuntime(slow_model(0.05), Policy(), rule=rule).infer(X, interrupt=0.01)
    assert answer.interrupted and answer.prediction == 2 and answer.exit is None
    answer = ElasticRuntime(slow_model(0.05), Policy()).infer(X, interrupt=0.01)
    assert answer.prediction is None
