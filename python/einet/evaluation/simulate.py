"""Trace-driven evaluation of exit policies (docs/design.md section 9); tables and plots: einet.evaluation.tables.

For each test sample a policy is replayed on the sample's CS-profile row and
the ET-profile: that gives the times at which its branches finish. For each of
M draws of the forced-exit time tau, the sample counts as right when the answer
held at tau is right (no answer yet: wrong, unless the rule holds a time-zero
answer). Overall accuracy is the mean, with a 95% confidence interval over
samples. The exact expectation (integrating F instead of drawing tau) is
reported beside it, per sample too, so that policies are compared *paired*:
the mean per-sample difference and its paired 95% interval. Numpy and the
native planner only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..distributions import sample_exit_times
from ..errors import EinetValueError
from ..formats.profiles import CSProfile
from ..planner import Distribution, ETProfile, NativePredictor
from ..policies import Policy, single_exit, standard_policies
from ..rules import AnswerRule, RunningAnswer, as_rule, held_correctness


@dataclass(frozen=True)
class Trace:
    """When each sample's branches finished: times [S, N] (inf after the last), exits [S, N] (-1 after),
    and the seconds the policy spent, on this machine, taking in what each branch told it."""

    times: np.ndarray
    exits: np.ndarray
    policy_seconds: float = 0.0


def replay(policy: Policy, cs: CSProfile, et: ETProfile | Sequence[ETProfile],
           rule: str | AnswerRule = "latest") -> Trace:
    """Run `policy` on every sample of `cs` with the ET-profile's block times (or each sample with its
    own profile: a sequence of one per sample). The policy observes what the runtime would tell it
    under `rule` (under ``ensemble``, the ensemble's confidence)."""
    s_count, n = cs.confidence.shape
    profiles = [et] if isinstance(et, ETProfile) else list(et)
    if not isinstance(et, ETProfile) and len(profiles) != s_count:
        raise EinetValueError(f"one ET-profile per sample: got {len(profiles)} for {s_count} samples")
    for k, profile in enumerate(profiles):
        if profile.num_blocks != n:
            which = "the ET-profile" if isinstance(et, ETProfile) else f"sample {k}'s ET-profile"
            raise EinetValueError(f"the CS-profile has {n} exits but {which} {profile.num_blocks} blocks")
    rule = as_rule(rule)
    times = np.full((s_count, n), np.inf)
    exits = np.full((s_count, n), -1, dtype=np.int64)
    conv, branch = (profiles[0].conv.tolist(), profiles[0].branch.tolist()) if profiles else ([], [])
    confidence = cs.confidence.astype(np.float64)
    running = RunningAnswer(rule) if rule.name == "ensemble" else None
    log_probs = cs.dense_log_probs() if running is not None or policy.needs_log_probs else None
    policy_seconds = 0.0
    for s in range(s_count):
        if len(profiles) > 1:
            conv, branch = profiles[s].conv.tolist(), profiles[s].branch.tolist()
        policy.begin(cs.correct[s] if policy.needs_oracle else None)
        if running is not None:
            running.reset()
        t, q = 0.0, 0
        row = confidence[s].tolist()
        for i in range(n):
            t += conv[i]
            if policy.run_branch(i, t):
                t += branch[i]
                times[s, q], exits[s, q] = t, i
                q += 1
                signal = row[i] if running is None else running.add(i, log_probs[s, i])  # type: ignore[index]
                started = time.perf_counter()  # what the policy takes per branch: see planning_seconds
                if policy.needs_log_probs:
                    policy.record_log_probs(i, log_probs[s, i])  # type: ignore[index]
                stop = policy.observe(i, signal, t)
                policy_seconds += time.perf_counter() - started
                if stop:
                    break
    return Trace(times, exits, policy_seconds)


def planning_seconds(policy: Policy, cs: CSProfile, et: ETProfile, rule: str | AnswerRule = "latest",
                     samples: int = 200) -> float:
    """Seconds `policy` takes per branch it runs, on this machine, over a replay of `cs`'s first
    `samples` rows. The runtime pays it after every branch (:meth:`einet.runtime.ElasticRuntime.calibrate`
    folds it into the branch times); next to light exits (~30 us) EINet's re-planning (~10-20 us) is
    no longer free, so a policy that plans is scored and planned with it (:func:`charged`)."""
    if samples < 1 or cs.num_samples < 1:
        raise EinetValueError(f"need at least one sample to time the policy on, got samples={samples} and "
                              f"{cs.num_samples} profiled")
    trace = replay(policy, cs.subset(np.arange(min(samples, cs.num_samples))), et, rule)
    return trace.policy_seconds / max(int((trace.exits >= 0).sum()), 1)


def charged(et: ETProfile, seconds_per_branch: float) -> ETProfile:
    """`et` with `seconds_per_branch` added to every branch: what a policy costs, as the runtime sees it."""
    if not (math.isfinite(seconds_per_branch) and seconds_per_branch >= 0):
        raise EinetValueError(f"seconds_per_branch must be a finite number >= 0, got {seconds_per_branch}")
    return ETProfile(et.conv, et.branch + seconds_per_branch)


@dataclass(frozen=True)
class PolicyResult:
    """One policy's accuracy under one exit-time distribution."""

    name: str
    accuracy: float  # mean over samples and draws of tau
    ci95: float  # half-width of the 95% interval over samples
    expected: float  # exact: tau integrated out with F
    mean_branches: float  # branches run per sample (until stopped)
    per_sample: np.ndarray  # each sample's accuracy over its draws
    per_sample_expected: np.ndarray  # each sample's exact expectation: what paired differences are taken of
    labels: np.ndarray | None = None  # the samples' labels: paired comparisons check they are the same samples


def evaluate(policy: Policy, cs: CSProfile, et: ETProfile, dist: Distribution, draws: int = 100, seed: int = 0,
             rule: str | AnswerRule = "latest") -> PolicyResult:
    """Replay `policy` and score it under `draws` exit times per sample, and exactly."""
    if draws < 1:
        raise EinetValueError(f"draws must be >= 1, got {draws}")
    rule = as_rule(rule)
    trace = replay(policy, cs, et, rule)
    held = held_correctness(trace.exits, cs, rule)
    taus = sample_exit_times(dist, (cs.num_samples, draws), np.random.default_rng(seed))
    per_sample = _held_at(trace, held, taus).mean(1)
    cdf = np.where(np.isfinite(trace.times), dist.cdf(trace.times), 1.0)  # no more branches: all mass is in
    mass = np.diff(np.concatenate([np.zeros((cs.num_samples, 1)), cdf, np.ones((cs.num_samples, 1))], 1), axis=1)
    exact = (mass * held).sum(1)
    return PolicyResult(policy.name, float(per_sample.mean()), ci95_half_width(per_sample), float(exact.mean()),
                        float((trace.exits >= 0).sum(1).mean()), per_sample, exact, cs.labels)


def _held_at(trace: Trace, held: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """[S, M]: whether the answer held at each of a sample's exit times `taus` [S, M] is right."""
    finished_by = (trace.times[:, None, :] <= taus[:, :, None]).sum(-1)  # branches done by each tau
    return np.take_along_axis(held, finished_by, 1)


def correct_at(policy: Policy, cs: CSProfile, et: ETProfile | Sequence[ETProfile], deadlines: np.ndarray,
               rule: str | AnswerRule = "latest") -> np.ndarray:
    """[S] bool: whether each sample's held answer is right when it is stopped at its own exit time
    `deadlines[s]` (seconds): what a runtime interrupted at those deadlines should return, so that
    the two can be compared sample by sample (paired) instead of through two noisy averages. `et`:
    one profile, or one per sample (see :func:`replay`)."""
    deadlines = np.asarray(deadlines, dtype=np.float64)
    if deadlines.shape != (cs.num_samples,):
        raise EinetValueError(f"one deadline per sample: expected shape ({cs.num_samples},), got {deadlines.shape}")
    rule = as_rule(rule)
    trace = replay(policy, cs, et, rule)
    return _held_at(trace, held_correctness(trace.exits, cs, rule), deadlines[:, None])[:, 0]


def ci95_half_width(values: np.ndarray) -> float:
    """1.96 standard errors of the mean over samples (nan for fewer than two)."""
    return 1.96 * float(np.std(values, ddof=1)) / math.sqrt(values.size) if values.size > 1 else math.nan


@dataclass(frozen=True)
class PairedDifference:
    """mean_s (a_s - b_s) over the same samples and exit times, with its paired 95% half-width."""

    mean: float
    ci95: float

    @property
    def significant(self) -> bool:
        """The paired interval excludes 0 (differences below 1e-12 are rounding, not a difference)."""
        return abs(self.mean) > self.ci95 + 1e-12

    def __str__(self) -> str:
        mark = "*" if self.significant else ""
        return f"{100 * self.mean:+.2f} ± {100 * self.ci95:.2f}{mark}"


def paired_difference(a: PolicyResult, b: PolicyResult) -> PairedDifference:
    """a minus b, paired over samples on their exact expectations. The samples must be the same."""
    if a.per_sample_expected.shape != b.per_sample_expected.shape or (
            a.labels is not None and b.labels is not None and not np.array_equal(a.labels, b.labels)):
        raise EinetValueError(f"{a.name!r} and {b.name!r} were not evaluated on the same samples")
    delta = a.per_sample_expected - b.per_sample_expected
    return PairedDifference(float(delta.mean()), ci95_half_width(delta))


def evaluate_all(et: ETProfile, dist: Distribution, predictor: NativePredictor, holdout: CSProfile, test: CSProfile,
                 rule: str | AnswerRule = "latest", draws: int = 100,
                 compressed: tuple[ETProfile, CSProfile] | None = None,
                 signal: str = "confidence") -> list[PolicyResult]:
    """Every policy of the paper's comparison on `test` (the statistics plan from `holdout`), plus, when
    its (ET, CS) profiles are given, the compressed single-exit model: the same network at half width."""
    results = [evaluate(p, test, et, dist, draws=draws, rule=rule)
               for p in standard_policies(et, dist, predictor, holdout, rule, signal)]
    if compressed is not None:
        small_et, small_cs = compressed
        policy = single_exit(small_et.num_blocks, name="compressed single-exit")
        # one exit: every rule holds its answer; the time-zero answer, if any, stays
        results.append(evaluate(policy, small_cs, small_et, dist, draws=draws,
                                rule=replace(as_rule(rule), name="latest", weights=None)))
    return results


def compare(results: Sequence[PolicyResult], reference: str = "EINet") -> list[dict[str, object]]:
    """Rows in the paper's form: each policy's accuracy (drawn, with its unpaired interval), its exact
    expectation, and EINet minus the policy *paired* over the same samples and exit times, with the
    paired 95% half-width (`paired_ci95`) and whether it excludes 0. Unpaired intervals (about
    ±0.5 pp on 10,000 images) hide differences of 0.1 pp that the paired one resolves."""
    by_name = {r.name: r for r in results}
    ref = by_name.get(reference)
    rows = []
    for r in results:
        paired = None
        if ref is not None and r is not ref:
            try:
                paired = paired_difference(ref, r)
            except ValueError:  # another model on other samples: no pairing
                paired = None
        rows.append({"policy": r.name, "accuracy": r.accuracy, "ci95": r.ci95, "expected": r.expected,
                     "einet_minus_policy": paired.mean if paired else None,
                     "paired_ci95": paired.ci95 if paired else None,
                     "significant": paired.significant if paired else None, "branches": r.mean_branches})
    return rows
