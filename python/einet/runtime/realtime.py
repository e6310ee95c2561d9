"""Real-time checks of the elastic runtime: does it do what the simulator predicts (design section 9)?

- :func:`run_with_deadlines`: a stream of images, each interrupted at its deadline;
- :func:`check_against_simulator`: a static runtime against the simulator replaying the same
  policy on the images' CS-profile with the runtime's calibrated profile;
- :func:`run_stream` and :func:`replay_observed`: an adaptive runtime against the simulator
  replaying, for every sample, the block times the runtime actually observed for it; and
  :func:`promised`: what the simulator predicts for each sample before it runs, knowing how the
  device's part times have varied.

Kept apart from :mod:`einet.runtime`, which serves inferences and needs none of this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import EinetValueError
from ..evaluation.simulate import ci95_half_width, correct_at
from ..formats.profiles import CSProfile
from ..planner import ETProfile
from ..policies import Policy
from ..rules import RunningAnswer
from ..validation import number
from . import Answer, ElasticRuntime

COLD_START_RUNS = 10  # untimed inferences before a real-time check measures the runtime
PROMISE_WINDOW = 200  # the earlier samples whose part delays `promised` draws from
PROMISE_DRAWS = 20  # how many of them per sample


def run_directly(model: Any, x: torch.Tensor, running: RunningAnswer) -> None:
    """One sample through every block and exit in the calling thread, each exit's log-probabilities
    read back and folded into `running` as the runtime does: the baseline its own cost is measured
    against (``benchmarks/test_bench_runtime.py``)."""
    running.reset()
    with torch.inference_mode():
        h = x
        for i in range(model.num_exits):
            h = model.forward_block(i, h)
            running.add(i, model.forward_exit(i, h).float().log_softmax(-1)[0].cpu().numpy())


@dataclass(frozen=True, eq=False)
class RealtimeReport:
    """Elastic inference under real timer interrupts over many samples."""

    correct: np.ndarray  # [S] bool: each sample's returned answer was right (no answer: wrong)
    latencies: tuple[float, ...]  # seconds from each forced exit to the answer's return
    planning_share: float  # time in the policy / total inference time, over the runs not interrupted

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else 0.0

    @property
    def samples(self) -> int:
        return len(self.correct)


def run_with_deadlines(runtime: ElasticRuntime, images: torch.Tensor, labels: Any, deadlines: Any,
                       uninterrupted: int = 100, progress: bool = True) -> RealtimeReport:
    """Each image (a row of `images`) interrupted at its deadline (seconds), started once the previous
    image's block in flight has ended (as the simulator assumes: every sample on an idle device);
    then `uninterrupted` images run to the end to measure the planner's share of the inference time."""
    from tqdm.auto import tqdm

    correct, latencies = np.zeros(len(deadlines), dtype=bool), []
    for k in tqdm(range(len(deadlines)), desc="real-time", disable=not progress, leave=False):
        runtime.wait_idle()
        answer = runtime.infer(images[k:k + 1], interrupt=float(deadlines[k]))
        correct[k] = answer.prediction is not None and answer.prediction == int(labels[k])
        if answer.interrupted:
            latencies.append(answer.elapsed - float(deadlines[k]))
    planning, total = 0.0, 0.0
    runtime.wait_idle()  # the last interrupted image's block in flight is not this one's time
    for k in range(min(uninterrupted, len(deadlines))):
        answer = runtime.infer(images[k:k + 1])
        planning += answer.planning_seconds
        total += answer.elapsed
    return RealtimeReport(correct, tuple(latencies), planning / total if total else 0.0)


@dataclass(frozen=True, eq=False)
class SimulatorCheck:
    """The runtime against the trace-driven simulator on the same images and the same deadlines."""

    report: RealtimeReport  # what the runtime returned
    simulated: np.ndarray  # [S] bool: the simulator's held answer right at the same deadline
    et: ETProfile  # the calibrated profile both planned and simulated with

    @property
    def per_sample(self) -> np.ndarray:
        """[S]: runtime minus simulator, each sample's answer right (1) or not (0)."""
        difference: np.ndarray = self.report.correct.astype(np.float64) - self.simulated
        return difference

    @property
    def difference(self) -> float:
        """Runtime minus simulator accuracy (a share): only timing can make them differ."""
        return float(self.per_sample.mean())

    @property
    def ci95(self) -> float:
        """The paired 95% half-width of `difference` over the samples."""
        return ci95_half_width(self.per_sample)


def check_against_simulator(runtime: ElasticRuntime, policy_for: Callable[[ETProfile], Policy], et: ETProfile,
                            cs: CSProfile, images: torch.Tensor, deadlines: Any, warmup: int = 100,
                            uninterrupted: int = 100, progress: bool = False) -> SimulatorCheck:
    """Does the runtime do what the simulator predicts? The one real-time check (demo, CUDA script,
    benchmark). `images` and `cs` (their CS-profile: labels, confidences, log-probabilities) are the
    same samples in the same order, one deadline (seconds) each. A few images run untimed (the cold
    start), then `warmup` run to the end so the runtime measures what it adds to `et`
    (:meth:`ElasticRuntime.calibrate`); the policy is rebuilt for the calibrated profile
    (`policy_for`); every image is then interrupted at its deadline, and the simulator replays the
    same policy on `cs` and scores the answer it holds at the same deadlines."""
    deadlines = np.asarray(deadlines, dtype=np.float64)
    if not len(images) == len(deadlines) == cs.num_samples:
        raise EinetValueError(f"one image, deadline and CS-profile row per sample: got {len(images)} images, "
                              f"{len(deadlines)} deadlines and {cs.num_samples} profiled samples")
    for k in range(min(COLD_START_RUNS, len(images))):
        runtime.infer(images[k:k + 1])
    runtime.reset_statistics()
    for k in range(min(warmup, len(images))):
        runtime.infer(images[k:k + 1])
    et = runtime.calibrate(et)
    runtime.policy = policy_for(et)
    report = run_with_deadlines(runtime, images, cs.labels, deadlines, uninterrupted, progress)
    simulated = correct_at(policy_for(et), cs, et, deadlines, runtime.rule)
    return SimulatorCheck(report, simulated, et)


@dataclass(frozen=True, eq=False)
class Stream:
    """A stream of samples run by a runtime, each with its deadline, and what the runtime held for each."""

    answers: tuple[Answer, ...]
    policies: tuple[Policy, ...]  # the policy each sample ran with (an adaptive runtime's changes)
    profiles: tuple[ETProfile, ...]  # the block times the runtime planned each sample with
    deadlines: np.ndarray
    correct: np.ndarray  # [S] bool: the answer returned was right

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else 0.0


def run_stream(runtime: ElasticRuntime, images: torch.Tensor, labels: Any, deadlines: Any,
               profile: ETProfile | None = None, plan_for_deadline: bool = False,
               between: Callable[[int], None] | None = None, progress: bool = False) -> Stream:
    """Each image interrupted at its deadline, on an idle device (after the previous block in flight),
    recording what the runtime planned with. `profile`: a static runtime's (an adaptive one's is
    read from it before each sample); `between(k)` is called before sample k (e.g. to switch a
    load or a slowdown on)."""
    return run_streams([(runtime, profile)], images, labels, deadlines, plan_for_deadline, between, progress)[0]


def run_streams(runtimes: Sequence[tuple[ElasticRuntime, ETProfile | None]], images: torch.Tensor, labels: Any,
                deadlines: Any, plan_for_deadline: bool = False, between: Callable[[int], None] | None = None,
                progress: bool = False) -> list[Stream]:
    """:func:`run_stream` for several runtimes (each with its profile, as there) side by side: every
    image goes through each of them in turn, the order rotating from image to image, so that what
    changes on the device over the run (load, clock speed) hits them all alike: their paired
    differences are the runtimes', not the moments'."""
    from tqdm.auto import tqdm

    deadlines = np.asarray(deadlines, dtype=np.float64)
    records: list[tuple[list[Answer], list[Policy], list[ETProfile]]] = [([], [], []) for _ in runtimes]
    correct = np.zeros((len(runtimes), len(deadlines)), dtype=bool)
    for k in tqdm(range(len(deadlines)), desc="stream", disable=not progress, leave=False):
        if between is not None:
            between(k)
        for j in [(k + i) % len(runtimes) for i in range(len(runtimes))]:
            runtime, profile = runtimes[j]
            for other, _ in runtimes:  # nothing of another sample still running
                other.wait_idle()
            adaptation = runtime.adaptation
            held = adaptation.planned_profile if adaptation is not None else profile
            if held is None:
                raise EinetValueError("a static runtime's stream needs the profile it plans with")
            answer = runtime.infer(images[k:k + 1], interrupt=float(deadlines[k]), plan_for_deadline=plan_for_deadline)
            answer = runtime.completed(answer)  # its block in flight at the deadline has ended: a replay needs it
            answers, policies, profiles = records[j]
            answers.append(answer)
            policies.append(runtime.last_policy)
            profiles.append(held)
            correct[j, k] = answer.prediction is not None and answer.prediction == int(labels[k])
    return [Stream(tuple(answers), tuple(policies), tuple(profiles), deadlines, correct[j])
            for j, (answers, policies, profiles) in enumerate(records)]


def observed_profile(answer: Answer, planned: ETProfile, deadline: float, started_late: float = 1.0) -> ETProfile:
    """The block times a sample ran with: those the runtime measured for it, the block in flight at
    the deadline included (the blocks it never ran: the times it was planned with). A sample
    interrupted before it could start (busy, or given no core) had finished no block by its
    deadline: block 0 takes the deadline plus `started_late` seconds."""
    conv, branch = planned.conv.copy(), planned.branch.copy()
    if answer.interrupted and not answer.block_times:
        conv[0] = max(conv[0], deadline + started_late)
    for block, conv_seconds, branch_seconds in answer.block_times:
        conv[block] = conv_seconds
        if not np.isnan(branch_seconds):
            branch[block] = branch_seconds
    return ETProfile(conv, branch)


def replay_observed(stream: Stream, cs: CSProfile, rule: Any, observed: bool = True) -> np.ndarray:
    """[S] bool: for each sample, the simulator's held answer right at its deadline, replaying the
    policy it ran with on the block times the runtime observed for it (:func:`observed_profile`).
    With `observed` False, on the times it was planned with: the mean times the runtime expected
    (see :func:`promised` for a prediction that knows how they vary). CPU runtimes (on CUDA the
    runtime does not time blocks)."""
    profiles = ([observed_profile(a, p, d) for a, p, d in zip(stream.answers, stream.profiles, stream.deadlines)]
                if observed else list(stream.profiles))
    return _replay_each(stream.policies, cs, profiles, stream.deadlines, rule)


def part_delays(answer: Answer, planned: ETProfile, deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """How much longer than planned each conv part and branch of a sample took, in seconds (negative:
    faster; 0 for the parts it never ran; a sample that could not start by its deadline: block 0
    was late by at least that much)."""
    observed = observed_profile(answer, planned, deadline, started_late=0.0)
    return observed.conv - planned.conv, observed.branch - planned.branch


def promised(stream: Stream, cs: CSProfile, rule: Any, window: int = PROMISE_WINDOW, draws: int = PROMISE_DRAWS,
             seed: int = 0) -> np.ndarray:
    """[S] float: each sample's chance of a right answer at its deadline, as the simulator predicts it
    before the sample runs, knowing how this device's part times vary and not only their means: the
    times it was planned with plus the part delays (:func:`part_delays`) of `draws` samples drawn
    from the `window` before it, averaged; only those that ran at least as long as its deadline
    (the first sample, or none such: the planned times).

    Why: on a loaded CPU a part is now and then preempted for milliseconds. The mean times
    (``replay_observed(observed=False)``) spread that over every sample as a little slowness,
    while it costs the few samples it hits their later answers: measured in ``einet demo`` under two
    steady or switching CPU burners, the mean times predicted 0.8-3.9 pp more than the runtime held,
    this promise within 1 pp (docs/results.md). A prediction, not a replay: no sample's own times
    are used. CPU runtimes (on CUDA the runtime does not time blocks: this is the mean times)."""
    window, draws = (int(number(name, value, 1, None, integer=True)) for name, value in
                     (("window", window), ("draws", draws)))
    rng = np.random.default_rng(seed)
    delays = [part_delays(answer, planned, deadline)
              for answer, planned, deadline in zip(stream.answers, stream.profiles, stream.deadlines)]
    finished = np.array([not answer.interrupted for answer in stream.answers], dtype=bool)
    rows: list[int] = []
    profiles: list[ETProfile] = []
    for k, planned in enumerate(stream.profiles):
        earlier = np.arange(max(0, k - window), k)
        # only delays that cover this deadline: of a sample that ran to its end or was stopped no sooner (an
        # interrupted sample's later parts were never timed: counting them as on time promised too much;
        # deadlines do not depend on the load, so choosing by them biases nothing)
        earlier = earlier[finished[earlier] | (stream.deadlines[earlier] >= stream.deadlines[k])]
        if not len(earlier):
            rows.append(k)
            profiles.append(planned)
            continue
        for j in rng.choice(earlier, min(draws, len(earlier)), replace=False):
            conv, branch = delays[j]
            rows.append(k)
            profiles.append(ETProfile(np.maximum(planned.conv + conv, 0.0), np.maximum(planned.branch + branch, 0.0)))
    index = np.array(rows, dtype=np.int64)
    right = _replay_each([stream.policies[k] for k in rows], cs.subset(index), profiles, stream.deadlines[index], rule)
    chance: np.ndarray = np.bincount(index, weights=right, minlength=len(stream.answers)) / np.bincount(
        index, minlength=len(stream.answers))
    return chance


def simulations(stream: Stream, cs: CSProfile, rule: Any) -> list[tuple[str, np.ndarray]]:
    """The simulator beside a stream a runtime ran, at the same deadlines, three ways (what the demo and
    ``einet run --check-simulator`` print): with the mean block times it planned each sample with;
    the promise (:func:`promised`); and replaying the block times it measured. Each as (what,
    [S] chance of a right answer)."""
    return [("with the mean block times the runtime planned each image with",
             replay_observed(stream, cs, rule, observed=False).astype(np.float64)),
            (f"the promise: those plus the part delays of {PROMISE_DRAWS} of the {PROMISE_WINDOW} images before each",
             promised(stream, cs, rule)),
            ("replaying the block times the runtime measured", replay_observed(stream, cs, rule).astype(np.float64))]


def _replay_each(policies: Sequence[Policy], cs: CSProfile, profiles: Sequence[ETProfile], deadlines: np.ndarray,
                 rule: Any) -> np.ndarray:
    """[R] bool: row r of `cs` replayed by `policies[r]` with `profiles[r]`, stopped at `deadlines[r]`;
    one replay per policy (an adaptive runtime changes policy a few times in a stream)."""
    right = np.zeros(len(profiles), dtype=bool)
    rows_of: dict[int, list[int]] = {}
    for r, policy in enumerate(policies):
        rows_of.setdefault(id(policy), []).append(r)
    for rows in rows_of.values():
        index = np.array(rows, dtype=np.int64)
        right[index] = correct_at(policies[rows[0]], cs.subset(index), [profiles[r] for r in rows],
                                  np.asarray(deadlines)[index], rule)
    return right
