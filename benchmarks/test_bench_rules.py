"""Rule bookkeeping in the runtime: what holding the answer costs per finished branch.

Goal: the running ensemble (rule ``ensemble``: a per-class weighted sum of log-probabilities,
its argmax and the ensemble's confidence for the policy) <= 5 us per finished branch for 10
classes, measured beside rule ``latest`` in the same run.
Run: python -m pytest benchmarks/test_bench_rules.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from einet.rules import AnswerRule, RunningAnswer

EXITS, CLASSES = 14, 10


def one_inference(running: RunningAnswer, log_probs: np.ndarray) -> int | None:
    running.reset()
    for i in range(EXITS):
        running.add(i, log_probs[i])
    return running.prediction


@pytest.mark.benchmark(group="rule bookkeeping")
@pytest.mark.parametrize("rule", [AnswerRule("latest"), AnswerRule("ensemble", tuple(np.linspace(0.5, 2.0, EXITS)))],
                         ids=["latest", "ensemble"])
def test_answer_bookkeeping_per_branch(benchmark, speed_goal, rule):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (EXITS, CLASSES))
    log_probs = (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(np.float32)
    running = RunningAnswer(rule)
    prediction = benchmark(one_inference, running, log_probs)
    if rule.weights is None:  # latest: the last exit's class
        assert prediction == log_probs[-1].argmax()
    else:  # ensemble: the class of the weighted sum over every exit
        assert prediction == (np.asarray(rule.weights)[:, None] * log_probs).sum(0).argmax()
    if not benchmark.disabled:
        per_branch = benchmark.stats.stats.median / EXITS
        benchmark.extra_info["per_branch_us"] = 1e6 * per_branch
        speed_goal(per_branch <= 5e-6, f"{1e6 * per_branch:.2f} us per finished branch")
