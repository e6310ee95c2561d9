"""The real-time checks' simulator side on made-up streams: replaying what a runtime measured, and
the promise made before each sample from how earlier samples' part times varied."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet.evaluation.simulate import correct_at, replay  # noqa: E402
from einet.formats.profiles import CSProfile  # noqa: E402
from einet.policies import EveryExit, static_plan  # noqa: E402
from einet.runtime import Answer  # noqa: E402
from einet.runtime.realtime import Stream, part_delays, promised, replay_observed  # noqa: E402

PLANNED = einet.ETProfile([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])  # answers at 1.5, 3.0 and 4.5 s


def every_exit_right(samples: int) -> CSProfile:
    correct = np.ones((samples, 3), dtype=bool)
    return CSProfile(np.full((samples, 3), 0.9, dtype=np.float32), np.zeros((samples, 3), dtype=np.int64), correct,
                     np.zeros(samples, dtype=np.int64))


def stream(late: list[float | None], deadline: float = 2.0, policies: list | None = None) -> Stream:
    """Every sample planned with PLANNED and stopped at `deadline`; sample k's block 0 ran `late[k]` s
    longer (None: the sample could not start by its deadline: no block times)."""
    answers = []
    for extra in late:
        times = [] if extra is None else [(0, 1.0 + extra, 0.5), (1, 1.0, 0.5), (2, 1.0, 0.5)]
        answers.append(Answer(0, 0, 0.9, deadline, True, (0,), 0.0, times))
    count = len(late)
    return Stream(tuple(answers), tuple(policies or [EveryExit()] * count), (PLANNED,) * count,
                  np.full(count, deadline), np.ones(count, bool))


def test_a_replay_with_one_profile_per_sample_is_each_sample_replayed_alone():
    cs = every_exit_right(4)
    profiles = [einet.ETProfile(PLANNED.conv * (1 + k), PLANNED.branch) for k in range(4)]
    together = replay(static_plan(3, 0.7), cs, profiles)
    for k in range(4):
        alone = replay(static_plan(3, 0.7), cs.subset(np.array([k])), profiles[k])
        np.testing.assert_array_equal(together.times[k], alone.times[0])
    deadlines = np.full(4, 3.0)
    np.testing.assert_array_equal(correct_at(EveryExit(), cs, profiles, deadlines),
                                  [correct_at(EveryExit(), cs.subset(np.array([k])), profiles[k], deadlines[k:k + 1])[0]
                                   for k in range(4)])
    with pytest.raises(ValueError, match="one ET-profile per sample: got 3 for 4"):
        replay(EveryExit(), cs, profiles[:3])
    with pytest.raises(ValueError, match="sample 1's ET-profile 2 blocks"):
        replay(EveryExit(), cs, [PLANNED, einet.ETProfile([1.0, 1.0], [0.5, 0.5]), PLANNED, PLANNED])


def test_replaying_what_was_measured_and_what_was_planned():
    s = stream([0.0, 1.0, 0.0])  # sample 1's first answer came at 2.5 s, after its 2-s deadline
    cs = every_exit_right(3)
    np.testing.assert_array_equal(replay_observed(s, cs, "latest"), [True, False, True])
    np.testing.assert_array_equal(replay_observed(s, cs, "latest", observed=False), [True, True, True])
    conv, branch = part_delays(s.answers[1], PLANNED, 2.0)
    np.testing.assert_allclose(conv, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(branch, 0.0)
    # A sample that could not start by its deadline finished nothing by then; its block 0 was late
    # by at least the deadline past the plan
    unstarted = stream([None], deadline=2.0)
    assert not replay_observed(unstarted, every_exit_right(1), "latest")[0]
    np.testing.assert_allclose(part_delays(unstarted.answers[0], PLANNED, 2.0)[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(part_delays(stream([None], deadline=0.5).answers[0], PLANNED, 0.5)[0], 0.0)


def test_each_sample_is_replayed_with_the_policy_it_ran():
    # exit 0 wrong, exit 1 right; by a 3.2-s deadline running every exit has answered with exit 1 (at
    # 3 s), running the last exit only has not (3.5 s): no answer
    cs = every_exit_right(4)
    cs.correct[:, 0] = False
    cs.prediction[:, 0] = 1
    last_only = static_plan(3, 0.3)
    s = stream([0.0] * 4, deadline=3.2, policies=[EveryExit(), last_only, EveryExit(), last_only])
    np.testing.assert_array_equal(replay_observed(s, cs, "latest"), [True, False, True, False])
    np.testing.assert_allclose(promised(s, cs, "latest"), [1.0, 0.0, 1.0, 0.0])


def test_the_promise_learns_how_part_times_vary_from_earlier_samples_only():
    cs = every_exit_right(6)
    # Sample 0 was late by 1 s (its first answer missed the deadline); it cannot know that itself.
    s = stream([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    chance = promised(s, cs, "latest", window=1, draws=1)
    np.testing.assert_allclose(chance, [1.0, 0.0, 1.0, 1.0, 1.0, 1.0])  # sample 1 draws sample 0's delays
    # One late sample in two, as a mean, is 0.5 s late for all, which the 2-s deadline absorbs: the
    # mean times promise every answer; the variation promises half of them, as happened.
    alternating = stream([1.0, 0.0] * 50)
    held = replay_observed(alternating, every_exit_right(100), "latest")
    assert held.mean() == pytest.approx(0.5)
    chance = promised(alternating, every_exit_right(100), "latest", window=20, draws=20)
    assert chance[1:].mean() == pytest.approx(0.5, abs=0.05)
    assert np.all((chance >= 0) & (chance <= 1))
    # only the `window` samples before each: with one, every sample after the second draws an on-time one
    chance = promised(stream([1.0] + [0.0] * 30), every_exit_right(31), "latest", window=1, draws=1)
    np.testing.assert_allclose(chance, [1.0, 0.0] + [1.0] * 29)
    # nothing to promise, and one sample alone (the planned times)
    assert promised(stream([]), every_exit_right(0), "latest").shape == (0,)
    np.testing.assert_allclose(promised(stream([1.0]), every_exit_right(1), "latest"), [1.0])
    with pytest.raises(ValueError, match="window"):
        promised(s, cs, "latest", window=0)
    with pytest.raises(TypeError, match="draws must be an integer"):
        promised(s, cs, "latest", draws=1.5)


def test_the_promise_draws_only_delays_that_cover_the_deadline():
    """An earlier sample stopped sooner never timed its later parts: they must not count as on time."""
    cs = every_exit_right(3)
    cs.correct[:, :2] = False  # only exit 2 is right: answered at 4.5 s when on time
    cs.prediction[:, :2] = 1
    on_time = [(0, 1.0, 0.5), (1, 1.0, 0.5), (2, 1.0, 0.5)]
    cut_early = Answer(1, 0, 0.9, 2.0, True, (0,), 0.0, [(0, 1.0, 0.5), (1, 1.0, math.nan)])  # stopped at 2 s
    late_exit_2 = Answer(1, 1, 0.9, 4.6, True, (0, 1), 0.0, [(0, 1.0, 0.5), (1, 1.0, 0.5), (2, 2.0, 0.5)])
    last = Answer(0, 2, 0.9, 4.5, False, (0, 1, 2), 0.0, on_time)
    s = Stream((cut_early, late_exit_2, last), (EveryExit(),) * 3, (PLANNED,) * 3, np.array([2.0, 4.6, 4.6]),
               np.array([False, False, True]))
    chance = promised(s, cs, "latest", window=2, draws=2)
    # the last sample (deadline 4.6 s) learns only from the second (stopped at 4.6 s, its block 2 a second
    # late), not from the first (stopped at 2 s, blocks 1 and 2 unknown): 0, not 0.5
    assert chance[2] == 0.0
    assert chance[1] == 1.0  # the second: the first covers nothing past 2 s, so the planned times
