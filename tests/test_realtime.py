"""The real-time checks' simulator side on made-up streams: replaying what a runtime measured, and
the promise made before each sample from how earlier samples' part times varied."""

from __future__ import annotations

import numpy as np
import pytest

import einet
from einet.evaluation.simulate import correct_at, replay
from einet.formats.profiles import CSProfile
from einet.policies import EveryExit, static_plan
from einet.runtime import Answer
from einet.runtime.realtime import Stream, part_delays, promised, replay_observed

PLANNED = einet.ETProfile([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])  # answers at 1.5, 3.0 and 4.5 s


def every_exit_right(samples: int) -> CSProfile:
    correct = np.ones((samples, 3), dtype=bool)
    return CSProfile(np.full((samples, 3), 0.9, dtype=np.float32), np.zeros((samples, 3), dtype=np.int64), correct,
                     np.zeros(samples, dtype=np.int64))


def stream(late: list[float], deadline: float = 2.0) -> Stream:
    """Every sample planned with PLANNED and stopped at `deadline`; sample k's block 0 ran `late[k]` s longer."""
    answers = []
    for extra in late:
        times = [(0, 1.0 + extra, 0.5), (1, 1.0, 0.5), (2, 1.0, 0.5)]
        answers.append(Answer(0, 0, 0.9, deadline, True, (0,), 0.0, times))
    policy = EveryExit()
    count = len(late)
    return Stream(tuple(answers), (policy,) * count, (PLANNED,) * count, np.full(count, deadline), np.ones(count, bool))


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
    conv, branch = part_delays(s.answers[1], PLANNED)
    np.testing.assert_allclose(conv, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(branch, 0.0)


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
    with pytest.raises(ValueError, match="window"):
        promised(s, cs, "latest", window=0)
    with pytest.raises(TypeError, match="draws must be an integer"):
        promised(s, cs, "latest", draws=1.5)
