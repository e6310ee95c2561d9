"""A bundle evaluated, or run on image files, from Python: what ``einet evaluate BUNDLE`` and ``einet run``
do, without the command (which only parses its options, calls these and prints).

- :func:`evaluate_bundle`: the deployed configuration's exact expected accuracy on the bundle's test split.
- :func:`remap_classes`: images of a class-folder layout labelled with the bundle's class indices.
- :func:`draw_deadlines`: one deadline per image, fixed or drawn from an exit-time distribution.
- :func:`run_images`: the bundle's real-time runtime on images, each interrupted at its deadline.
- :func:`simulate_run`: the simulator beside such a run, at the same deadlines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EinetValueError

if TYPE_CHECKING:
    from ..bundle import Bundle, DeviceEntry
    from ..data import ImageArrays
    from ..planner import Distribution
    from ..runtime.realtime import Stream
    from .simulate import PolicyResult


@dataclass(frozen=True)
class BundleEvaluation:
    """A bundle's deployed configuration scored exactly on its test split, and the device entry it used."""

    result: PolicyResult
    entry: DeviceEntry  # whose ET-profile and deployment were simulated
    own_device: bool  # False: the asked device has no entry, the figures are `entry`'s device's


def evaluation_entry(bundle: Bundle, device: str = "cpu") -> tuple[DeviceEntry, bool]:
    """The bundle's entry for this machine's `device` and True; else its first entry and False (a
    simulation needs an ET-profile, not the device it was timed on)."""
    from ..formats.manifest import BundleError

    try:
        return bundle.entry(device), True
    except BundleError:
        return bundle.devices[0], False


def evaluate_bundle(bundle: Bundle, dist: Distribution, device: str = "cpu") -> BundleEvaluation:
    """The exact expected accuracy of the bundle's deployed policy and rule on its test CS-profile under the
    exit-time distribution `dist` (seconds), with `device`'s ET-profile (see :func:`evaluation_entry`)."""
    from .simulate import evaluate

    entry, own_device = evaluation_entry(bundle, device)
    et = bundle.et(entry).profile
    policy = bundle.policy(entry, et, dist, bundle.predictor(entry))
    result = evaluate(policy, bundle.test(), bundle.planned_profile(entry, et), dist, draws=1,
                      rule=entry.deployment.rule)
    return BundleEvaluation(result, entry, own_device)


def remap_classes(arrays: ImageArrays, classes: Sequence[str]) -> ImageArrays:
    """`arrays` (classes named by their folders) with labels that index `classes` (a bundle's): the
    network's answers and these labels then count the same classes. A folder class not in `classes` is
    refused."""
    from ..data import ImageArrays

    unknown = sorted(set(arrays.classes) - set(classes))
    if unknown:
        raise EinetValueError(f"the images have class folders the bundle does not know: {', '.join(unknown[:5])}")
    labels = np.array([classes.index(arrays.classes[k]) for k in arrays.labels], dtype=np.int64)
    return ImageArrays(arrays.images, labels, tuple(classes))


def draw_deadlines(bundle: Bundle, count: int, deadline_ms: float | None = None, kind: str | None = None,
                   horizon_ms: float | None = None, seed: int = 0) -> tuple[np.ndarray, str]:
    """`count` deadlines in seconds and what they are, in words: all `deadline_ms` if given, else drawn
    (with `seed`) from the exit-time distribution `kind` over `horizon_ms` (default: the bundle's)."""
    from ..bundle import exit_distribution
    from ..distributions import sample_exit_times

    if deadline_ms is not None:
        return np.full(count, deadline_ms * 1e-3), f"deadline {deadline_ms} ms"
    kind, horizon_ms = kind or bundle.dist_kind, horizon_ms or bundle.horizon_ms
    deadlines = sample_exit_times(exit_distribution(kind, horizon_ms), (count,), np.random.default_rng(seed))
    return deadlines, f"{kind} exit times over {horizon_ms:.3f} ms"


def run_images(bundle: Bundle, arrays: ImageArrays, deadlines: np.ndarray, *, device: str = "cpu",
               adapt: bool = True, inline: bool | None = None, eager: bool = False, warmup: int = 100,
               constructor: str | None = None, progress: bool = False, engine: str = "auto") -> Stream:
    """Every image of `arrays` (labelled with the bundle's classes: :func:`remap_classes`) through the bundle's
    runtime on `device`, interrupted at its deadline (seconds); the first `warmup` images run uninterrupted
    first, so that a cold start does not count and an adaptive runtime's estimates settle. `inline`: the
    blocks run in this thread, with its torch settings; `engine`: what runs them (see
    :meth:`einet.bundle.Bundle.runtime`)."""
    from ..runtime.realtime import run_stream

    images = bundle.preprocess(arrays.images)
    with bundle.runtime(device, adapt=adapt, constructor=constructor, inline=inline, eager=eager,
                        engine=engine) as runtime:
        for k in range(min(warmup, len(arrays))):
            runtime.infer(images[k:k + 1])
        entry = bundle.entry(device)
        static_profile = None if runtime.adaptation else bundle.planned_profile(entry, bundle.et(entry).profile)
        return run_stream(runtime, images, arrays.labels, deadlines, static_profile, progress=progress)


def simulate_run(bundle: Bundle, stream: Stream, arrays: ImageArrays, device: str = "cpu",
                 constructor: str | None = None) -> list[tuple[str, np.ndarray]]:
    """The simulator at the deadlines of `stream` (a :func:`run_images` of `arrays`), three ways (see
    :func:`einet.runtime.realtime.simulations`): each as (what, [S] chance of a right answer)."""
    from ..data import ImageDataset
    from ..profiling import profile_cs
    from ..runtime.realtime import simulations

    spec = bundle.input_spec
    cs = profile_cs(bundle.network(constructor), ImageDataset(arrays, spec.mean, spec.std), progress=False)
    return simulations(stream, cs, bundle.entry(device).deployment.rule)
