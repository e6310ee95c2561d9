"""What the runtime learns while it runs: block times and the exit-time distribution (design section 11).

The planner's two inputs are estimates made once, offline: the ET-profile (measured under one
load) and the exit-time distribution (assumed). A device that shares its cores, throttles, or
meets interrupts nobody modelled makes both wrong. The elastic runtime sees every block and
branch it runs and every interrupt that ends a sample, so it can correct both:

- :class:`BlockTimes`: a robust running estimate of every block's conv-part and branch time,
  as the offline profile times two factors: one per block that moves slowly (what the profile
  got wrong for good) and one device-wide factor that moves fast (load that comes and goes).
  Each tracks the *mean* time (a deadline's accuracy is linear in when answers come, and on a
  busy device times are skewed to the right: a median or a geometric mean would promise
  answers earlier than they come); each observation's ratio to the estimate is clipped, so one
  preempted block (a 50x outlier) moves the estimate by a bounded step.
- :class:`ExitTimes`: the exit-time distribution from what happened to recent samples. An
  interrupted sample gives its exit time; a sample that finished first gives only a lower
  bound (right-censored). Kaplan-Meier over a sliding window, blended with the configured
  prior while few samples have been seen, as an :class:`einet.Empirical` the planner takes.

Numpy and the native planner only; the runtime (:mod:`einet.runtime`) feeds them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..formats.adaptation import SETTINGS, check_adaptation
from ..formats.profiles import CSProfile
from ..planner import Deterministic, Distribution, Empirical, ETProfile, NativePredictor
from ..policies import Policy, PolicySpec, build_policy
from ..rules import AnswerRule
from ..validation import number

__all__ = ["Adaptation", "BlockTimes", "ExitTimes", "kaplan_meier", "replanning"]


@dataclass(frozen=True)
class _Rates:
    block: float  # per-block correction: slow
    device: float  # device-wide factor: fast
    clip: float  # the largest factor one observation's ratio to the estimate may count as


class BlockTimes:
    """Block and branch times as measured now: ``base * per_block * device``, each factor an
    exponentially weighted mean of the observed / expected ratio (kept in log space).

    `block_rate` (default 0.01: about a hundred samples to settle) moves each block's own
    correction; `device_rate` (default 0.05: some twenty block or branch times, a few samples)
    moves the device-wide factor shared by all; `clip` bounds one observation's residual to a
    factor of that many (default 4).
    """

    def __init__(self, et: ETProfile, block_rate: float = 0.01, device_rate: float = 0.05, clip: float = 4.0) -> None:
        self.base = et
        self._rates = _Rates(float(SETTINGS["block_rate"].check("block_rate", block_rate)),
                             float(SETTINGS["device_rate"].check("device_rate", device_rate)),
                             number("clip", clip, 1.0, 1e6, low_open=True))
        # the floor keeps log(observed / predicted) finite for a branch the profile timed at zero
        self._floor = max(1e-9, 1e-3 * float(np.median(np.concatenate([et.conv, et.branch]))))
        self._typical = max(self._floor, et.total() / (2 * et.num_blocks))  # a mean part's time
        self.reset()

    def reset(self) -> None:
        """Back to the offline profile."""
        n = self.base.num_blocks
        self._log_conv, self._log_branch = np.zeros(n), np.zeros(n)
        self._log_device = 0.0
        self.observations = 0

    @property
    def slowdown(self) -> float:
        """The device-wide factor: how much slower than the offline profile the device runs now."""
        return math.exp(self._log_device)

    def expected(self, block: int, branch: bool = False) -> float:
        """Block `block`'s conv-part (or branch) time in the current estimate."""
        base, log_block = (self.base.branch, self._log_branch) if branch else (self.base.conv, self._log_conv)
        return float(base[block]) * math.exp(log_block[block] + self._log_device)

    def observe(self, block: int, conv: float | None = None, branch: float | None = None) -> None:
        """One block's measured conv-part time and/or branch time, in seconds."""
        for seconds, base, log_block in ((conv, self.base.conv, self._log_conv),
                                         (branch, self.base.branch, self._log_branch)):
            if seconds is None or not math.isfinite(seconds) or seconds < 0:
                continue
            expected = max(float(base[block]), self._floor) * math.exp(log_block[block] + self._log_device)
            rates = self._rates
            ratio = min(max(max(seconds, self._floor) / expected, 1.0 / rates.clip), rates.clip)
            # each factor moves by its rate towards the observed ratio: a fixed point where the mean ratio is 1;
            # the device factor by a share of it that grows with the part's time (up to a typical part's),
            # so that a branch the profile timed at next to nothing cannot drag the whole device along
            weight = min(1.0, float(base[block]) / self._typical)
            self._log_device += math.log1p(rates.device * weight * (ratio - 1.0))
            log_block[block] += math.log1p(rates.block * (ratio - 1.0) * (1.0 - rates.device * weight))
            self.observations += 1

    def profile(self, slowdown: float | None = None) -> ETProfile:
        """The current estimate, as the planner takes it (with another device factor, if given)."""
        scale = math.exp(self._log_device) if slowdown is None else slowdown
        return ETProfile(self.base.conv * np.exp(self._log_conv) * scale,
                         self.base.branch * np.exp(self._log_branch) * scale)


def kaplan_meier(times: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan-Meier estimate of P(tau <= t) from right-censored data: (event times, CDF just
    after each). `observed[k]` is True when `times[k]` is an exit time, False when it is only a
    lower bound on it (the sample finished first). Ties: events count before censorings."""
    times, observed = np.asarray(times, dtype=np.float64), np.asarray(observed, dtype=bool)
    order = np.lexsort((~observed, times))  # by time; at equal times, events first
    times, observed = times[order], observed[order]
    at_risk = len(times) - np.arange(len(times))
    factors = np.where(observed, 1.0 - 1.0 / at_risk, 1.0)
    survival = np.cumprod(factors)
    return times[observed], 1.0 - survival[observed]


class ExitTimes:
    """The exit-time distribution learned from a sliding window of samples, blended with `prior`.

    With n samples in the window, the CDF is ``(n * KM + weight * prior) / (n + weight)``: the prior
    leads until about `weight` samples have been seen, then the data. The mass beyond the last
    observation (every sample finished before it: no exit seen) stays beyond it, at `far` times
    the latest time seen; to a planner all that mass comes after every branch has finished.
    """

    def __init__(self, prior: Distribution, horizon: float, window: int = 500, weight: float = 50.0,
                 points: int = 256) -> None:
        self.prior = prior
        self.horizon = number("horizon", horizon, 0.0, None, low_open=True)
        self.window = int(SETTINGS["window"].check("window", window))
        self.weight = float(SETTINGS["weight"].check("weight", weight))
        self.points = int(number("points", points, 8, 100_000, integer=True))
        self._times: deque[float] = deque(maxlen=self.window)
        self._observed: deque[bool] = deque(maxlen=self.window)

    def __len__(self) -> int:
        return len(self._times)

    def reset(self) -> None:
        self._times.clear()
        self._observed.clear()

    def observe(self, seconds: float, interrupted: bool) -> None:
        """A sample's end: interrupted at `seconds` (an exit time), or finished then (a lower bound)."""
        if math.isfinite(seconds) and seconds >= 0:
            self._times.append(float(seconds))
            self._observed.append(bool(interrupted))

    def cdf(self, t: np.ndarray) -> np.ndarray:
        """The blended CDF at times `t`."""
        t = np.asarray(t, dtype=np.float64)
        prior = np.asarray(self.prior.cdf(t), dtype=np.float64)
        n = len(self._times)
        if n == 0:
            return np.asarray(prior)
        events, after = kaplan_meier(np.array(self._times), np.array(self._observed))
        index = np.searchsorted(events, t, side="right")
        learned = np.where(index > 0, np.concatenate([[0.0], after])[index], 0.0)
        blended: np.ndarray = (n * learned + self.weight * prior) / (n + self.weight)
        return blended

    def distribution(self) -> Distribution:
        """The blended distribution as the planner takes it: `points` quantiles of the blended CDF
        (the prior itself while no sample has been seen)."""
        if not self._times:
            return self.prior
        latest = max(max(self._times), self.horizon)
        grid = np.concatenate([np.linspace(0.0, latest, 4 * self.points), np.sort(np.array(self._times))])
        grid.sort()
        cdf = np.maximum.accumulate(self.cdf(grid))
        levels = (np.arange(self.points) + 0.5) / self.points
        index = np.searchsorted(cdf, levels, side="left")
        far = 10.0 * latest  # the mass no sample reached: after every branch
        samples = np.where(index < len(grid), grid[np.minimum(index, len(grid) - 1)], far)
        return Empirical(samples)

    def distance(self, other: Distribution) -> float:
        """The largest CDF difference to `other` over the horizon (Kolmogorov-Smirnov): how far the
        estimate has moved since a plan was made with `other`."""
        grid = np.linspace(0.0, max(self.horizon, max(self._times, default=0.0)), 4 * self.points)
        return float(np.max(np.abs(self.cdf(grid) - np.asarray(other.cdf(grid), dtype=np.float64))))


class Adaptation:
    """What an adaptive :class:`einet.runtime.ElasticRuntime` keeps: the two estimates, the policy
    planned with them, and when to plan again.

    `policy_for(et, dist)` builds the policy for a profile and an exit-time distribution (e.g. EINet
    with the statistics plan first, or the statistics plan itself); it is called at the start, and
    again when the estimates have moved: the full inference time by more than `tolerance`
    (relative), or the exit-time CDF by more than `distance` (Kolmogorov-Smirnov), and `gap`
    samples have passed since the last plan (a plan costs; a load that flickers faster than that
    is averaged over). Samples are
    learnt from in batches of `every`, by the runtime's worker thread between samples, and a new
    plan is made there too, used from the next sample on. With `background` it is made on a thread
    of its own instead, while samples go on with the old one: measured, that costs more than it
    saves (on 2 busy cores its Python time slows the samples it overlaps: B-AlexNet, idle, -2.3 pp
    against planning between samples), so it is off by default. Plans are kept per profile rounded
    to steps of `step` (relative, per block) and exit-time estimate, so a load that comes and goes
    finds its plans made (at most `cache` of them are kept). `learn_blocks` / `learn_exits`
    switch either estimate off.
    """

    def __init__(self, policy_for: Callable[[ETProfile, Distribution], Policy], et: ETProfile, prior: Distribution,
                 horizon: float, *, block_rate: float = 0.01, device_rate: float = 0.05, window: int = 500,
                 weight: float = 50.0, every: int = 10, gap: int = 50, tolerance: float = 0.1,
                 distance: float = 0.05, step: float = 0.1, cache: int = 32, learn_blocks: bool = True,
                 learn_exits: bool = True, background: bool = False) -> None:
        self.policy_for = policy_for
        self.block_times = BlockTimes(et, block_rate, device_rate)
        self.exit_times = ExitTimes(prior, horizon, window, weight)
        # every setting checked against the one table a config and a bundle are checked with
        check_adaptation({"every": every, "gap": gap, "tolerance": tolerance, "distance": distance, "step": step,
                          "cache": cache, "learn_blocks": learn_blocks, "learn_exits": learn_exits,
                          "background": background})
        self.every, self.gap, self._cache_size = int(every), int(gap), int(cache)
        self._since = 0  # samples learnt from since the last plan
        self.tolerance, self.distance = float(tolerance), float(distance)
        self.learn_blocks, self.learn_exits, self.background = learn_blocks, learn_exits, background
        self._step = math.log1p(step)
        self._plans: dict[tuple[bytes, bytes, int], Policy] = {}  # (rounded profile, exit-time version) -> policy
        self._batch_slowdown: float | None = None  # the device factor over the last batch of samples
        self.planning_seconds: list[float] = []  # what each new plan took to make
        self._dist_version = 0  # counts the exit-time estimates planned with
        self._records: deque[tuple[list[tuple[int, float, float]], float, bool, tuple[int, bool, float] | None]] = \
            deque()
        self.replans = 0
        self._planner: threading.Thread | None = None
        self._error: BaseException | None = None  # of a background plan: raised by the next update()
        self.planned_et, self.planned_dist = et, prior
        self._plan(*self._rounded(et), prior)  # (a failing policy_for raises here)

    def _rounded(self, et: ETProfile) -> tuple[tuple[bytes, bytes], ETProfile]:
        """`et` rounded to steps of the base profile (per block), and the key of the rounding."""
        base, floor = self.block_times.base, 1e-12
        steps = [np.round(np.log(np.maximum(now, floor) / np.maximum(then, floor)) / self._step).astype(np.int64)
                 for now, then in ((et.conv, base.conv), (et.branch, base.branch))]
        rounded = ETProfile(base.conv * np.exp(steps[0] * self._step), base.branch * np.exp(steps[1] * self._step))
        return (steps[0].tobytes(), steps[1].tobytes()), rounded

    def _plan(self, key: tuple[bytes, bytes], et: ETProfile, dist: Distribution) -> None:
        full = (*key, self._dist_version)
        policy = self._plans.get(full)
        if policy is None:
            started = time.perf_counter()
            policy = self.policy_for(et, dist)
            self.planning_seconds.append(time.perf_counter() - started)
            if len(self._plans) >= self._cache_size:
                self._plans.pop(next(iter(self._plans)))  # the oldest
            self._plans[full] = policy
        self.planned_profile, self.policy = et, policy

    def _plan_in_background(self, key: tuple[bytes, bytes], et: ETProfile, dist: Distribution) -> None:
        try:
            self._plan(key, et, dist)
        except Exception as error:  # raised by the next update()
            self._error = error

    @property
    def cached_plans(self) -> int:
        """How many plans are kept (see `step` and `cache`)."""
        return len(self._plans)

    @property
    def profile(self) -> ETProfile:
        """The block times the runtime plans with now: the per-block estimates, with the device factor
        averaged over the last batch of samples (one slow sample does not make a plan)."""
        if not self.learn_blocks:
            return self.block_times.base
        return self.block_times.profile(self._batch_slowdown)

    @property
    def dist(self) -> Distribution:
        """The exit-time distribution the runtime plans with now."""
        return self.exit_times.distribution() if self.learn_exits else self.exit_times.prior

    def record(self, times: list[tuple[int, float, float]], end: float, interrupted: bool,
               in_flight: tuple[int, bool, float] | None = None) -> None:
        """One sample (the caller's thread; a deque append): its (block, conv, branch) times, NaN for a
        branch not run; when it ended: at its interrupt, or when it finished (a lower bound); and for
        an interrupted sample, the part in flight (block, whether its branch) and how long it had run
        by then (a lower bound on its time: on a busy device the longest parts are the likeliest to be
        cut, and leaving them out would learn too fast a device)."""
        self._records.append((times, end, interrupted, in_flight))

    def pending(self) -> bool:
        return len(self._records) >= self.every

    def update(self) -> bool:
        """Learn from the recorded samples and plan again if the estimates moved (True then)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        slowdowns = []
        while self._records:
            times, end, interrupted, in_flight = self._records.popleft()
            if self.learn_blocks:
                for block, conv, branch in times:
                    self.block_times.observe(block, conv, None if math.isnan(branch) else branch)
                if in_flight is not None:
                    block, branch, seconds = in_flight
                    if seconds > self.block_times.expected(block, branch):  # longer than expected already
                        self.block_times.observe(block, **{"branch" if branch else "conv": seconds})
                slowdowns.append(self.block_times.slowdown)
            if self.learn_exits:
                self.exit_times.observe(end, interrupted)
            self._since += 1
        if slowdowns:
            self._batch_slowdown = float(np.exp(np.mean(np.log(slowdowns))))
        if self._since < self.gap:
            return False
        et, planned = self.profile, self.planned_et
        times_moved = abs(math.log((et.total() + 1e-12) / (planned.total() + 1e-12))) > math.log1p(self.tolerance)
        exits_moved = (self.learn_exits and len(self.exit_times) > 0
                       and self.exit_times.distance(self.planned_dist) > self.distance)
        if not (times_moved or exits_moved) or (self._planner is not None and self._planner.is_alive()):
            return False  # (a plan under way: the estimates are looked at again after the next batch)
        self.replans += 1
        self._since = 0
        dist = self.planned_dist
        if exits_moved:
            dist = self.dist
            self._dist_version += 1  # the exit-time estimate moved: plans of the earlier one no longer apply
        self.planned_et, self.planned_dist = et, dist
        key, rounded = self._rounded(et)
        if self.background and (*key, self._dist_version) not in self._plans:
            self._planner = threading.Thread(target=self._plan_in_background, args=(key, rounded, dist),
                                             daemon=True, name="einet-planner")
            self._planner.start()
        else:
            self._plan(key, rounded, dist)
        return True

    def for_deadline(self, deadline: float) -> Policy:
        """The policy for a sample whose deadline the caller knows: planned for exactly that deadline."""
        return self.policy_for(self.profile, Deterministic(deadline))

    def reset(self) -> None:
        """Forget everything learnt: back to the offline profile and the prior."""
        if self._planner is not None:
            self._planner.join()
        self._records.clear()
        self._since = 0
        self._batch_slowdown = None
        self.block_times.reset()
        self.exit_times.reset()
        self._dist_version += 1
        self.planned_et, self.planned_dist = self.block_times.base, self.exit_times.prior
        self._plan(*self._rounded(self.planned_et), self.planned_dist)


def replanning(holdout: CSProfile, rule: AnswerRule, predictor: NativePredictor | None = None,
               signal: str = "confidence") -> Callable[[ETProfile, Distribution], Policy]:
    """The `policy_for` of an :class:`Adaptation`: einet's EINet (the statistics plan of `holdout`
    first, re-planned per sample for a predicted gain of HEDGE_MARGIN) or, without a predictor,
    the statistics plan itself, for any profile and distribution (built by
    :func:`einet.policies.build_policy`; a deployment's: :func:`einet.evaluation.select.deployed_policy`).
    Planning again is cheap: under rule ensemble the held-out accuracies of exit sets are kept between calls."""
    spec = PolicySpec("einet" if predictor is not None else "statistics")
    memo: dict[tuple[int, ...], float] = {}

    def policy_for(et: ETProfile, dist: Distribution) -> Policy:
        return build_policy(spec, et, dist, rule, holdout=holdout, predictor=predictor, signal=signal, memo=memo)

    return policy_for
