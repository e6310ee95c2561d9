"""Block-wise profiles of a multi-exit model, and the one file format for profiles and predictors.

- ET-profile (execution time): per block, the conv-part and branch times on a
  device, after warm-up, over repeats: median (what the planner uses) and the
  90th/99th percentiles. CPU: a monotonic nanosecond clock. CUDA: CUDA events,
  synchronising once per repeat, not per block.
- CS-profile (confidence score): per sample and exit, the confidence (max
  softmax), the predicted class and whether it is right.

Files are einet's checked ``.npz`` container (:mod:`einet.npz`); loading also checks every
required array and its shape. The profile classes need numpy only; measuring needs torch.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

from .npz import ProfileFormatError, only_arrays, read_arrays, require_shapes, write_arrays
from .planner import ETProfile
from .validation import MAX_CLASSES

if TYPE_CHECKING:
    import torch

    from .data import ImageDataset
    from .models.base import MultiExitNetwork

# Named dimensions for require_shapes: negative numbers stand for sizes shared across arrays.
BLOCKS, SAMPLES = -1, -2  # (-3: classes, in log_probs)


@dataclass(frozen=True)
class ETRecord:
    """A measured ET-profile: medians (the planner's ETProfile), tail percentiles and provenance."""

    conv: np.ndarray
    branch: np.ndarray
    conv_p90: np.ndarray
    conv_p99: np.ndarray
    branch_p90: np.ndarray
    branch_p99: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    TIMES: ClassVar[tuple[str, ...]] = ("conv", "branch", "conv_p90", "conv_p99", "branch_p90", "branch_p99")

    @property
    def profile(self) -> ETProfile:
        return ETProfile(self.conv, self.branch)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_arrays(path, "et-profile", {n: np.asarray(getattr(self, n), np.float64) for n in self.TIMES},
                            self.meta)

    def subset_blocks(self, blocks: np.ndarray) -> ETRecord:
        """The profile of the network made of these blocks and their exits (e.g. a variant's cut of a
        larger one: einet.bundle.variant_exits), provenance kept."""
        return ETRecord(**{name: getattr(self, name)[blocks] for name in self.TIMES},
                        meta={**self.meta, "cut_to_blocks": [int(b) for b in blocks]})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ETRecord:
        arrays, meta = read_arrays(path, "et-profile")
        only_arrays(path, arrays, cls.TIMES)
        require_shapes(path, arrays, {n: (BLOCKS,) for n in cls.TIMES})
        record = cls(**{n: arrays[n].astype(np.float64) for n in cls.TIMES}, meta=meta)
        record.profile  # noqa: B018 - validates the times (finite, >= 0)
        return record


# Rich per-exit signals: all log-probabilities for up to this many classes, the top ones beyond.
LOG_PROB_CLASSES = 100
LOG_PROB_SLACK = 1e-2  # float16 rounding of a log-softmax near 0 may land just above it


def _check_classes(name: str, array: np.ndarray | None) -> None:
    """Class indices must be integers in [0, MAX_CLASSES): what bounds every array made from them."""
    if array is None or not array.size:
        return
    if array.dtype.kind not in "iu":
        raise ProfileFormatError(f"{name} must be integers, got {array.dtype}")
    if array.min() < 0 or array.max() >= MAX_CLASSES:
        raise ProfileFormatError(f"{name} must lie in [0, {MAX_CLASSES}), got {array.min()}..{array.max()}")


@dataclass(frozen=True)
class CSProfile:
    """Per sample and exit: confidence (max softmax), predicted class, correctness; plus the labels.

    ``log_probs`` (format 2, float16 [S, N, K]) are each exit's log-probabilities: all classes
    when there are at most ``LOG_PROB_CLASSES`` (K = classes), else the top K with their class
    indices in ``log_prob_classes``. They feed rule ``ensemble`` and the richer predictor
    signals; profiles written by format 1 have none (``log_probs is None``).
    """

    confidence: np.ndarray  # float32 [S, N]
    prediction: np.ndarray  # int64 [S, N]
    correct: np.ndarray  # bool [S, N]
    labels: np.ndarray  # int64 [S]
    meta: dict[str, Any] = field(default_factory=dict)
    log_probs: np.ndarray | None = None  # float16 [S, N, K]
    log_prob_classes: np.ndarray | None = None  # int32 [S, N, K] when only the top K of more classes are kept

    def __post_init__(self) -> None:
        s, n = self.confidence.shape if self.confidence.ndim == 2 else (-1, -1)
        if s < 0 or self.prediction.shape != (s, n) or self.correct.shape != (s, n) or self.labels.shape != (s,):
            raise ProfileFormatError(
                f"CS-profile arrays disagree: confidence {self.confidence.shape}, prediction {self.prediction.shape},"
                f" correct {self.correct.shape}, labels {self.labels.shape}")
        if s and not (np.all(self.confidence >= 0) and np.all(self.confidence <= 1)):
            raise ProfileFormatError("CS-profile confidences must lie in [0, 1]")
        for name in ("labels", "prediction", "log_prob_classes"):
            _check_classes(name, getattr(self, name))
        if self.log_probs is not None:
            if self.log_probs.ndim != 3 or self.log_probs.shape[:2] != (s, n) or not self.log_probs.shape[2]:
                raise ProfileFormatError(f"log_probs must be [{s}, {n}, K >= 1], got {self.log_probs.shape}")
            if self.log_probs.size and not np.all(self.log_probs <= LOG_PROB_SLACK):  # NaN fails too; -inf is p=0
                raise ProfileFormatError("CS-profile log-probabilities must be numbers <= 0 (no NaN, no +inf)")
            if self.log_prob_classes is not None and self.log_prob_classes.shape != self.log_probs.shape:
                raise ProfileFormatError(f"log_prob_classes {self.log_prob_classes.shape} must match log_probs "
                                         f"{self.log_probs.shape}")
        elif self.log_prob_classes is not None:
            raise ProfileFormatError("log_prob_classes given without log_probs")

    @property
    def num_samples(self) -> int:
        return int(self.labels.size)

    @property
    def num_exits(self) -> int:
        return int(self.confidence.shape[1])

    @property
    def has_log_probs(self) -> bool:
        return self.log_probs is not None

    def accuracy_per_exit(self) -> np.ndarray:
        return cast(np.ndarray, self.correct.mean(axis=0))

    def dense_log_probs(self) -> np.ndarray:
        """float32 [S, N, C] log-probabilities; classes beyond the stored top K get the smallest stored value."""
        if self.log_probs is None:
            raise ProfileFormatError("this CS-profile has no log-probabilities (format 1): regenerate it with "
                                     "`einet profile` to use rule 'ensemble' or the richer signals")
        values = self.log_probs.astype(np.float32)
        if self.log_prob_classes is None:
            return values
        classes = int(max(self.labels.max(initial=0), self.log_prob_classes.max(initial=0))) + 1
        dense = np.repeat(values.min(axis=2, keepdims=True), classes, axis=2)
        np.put_along_axis(dense, self.log_prob_classes.astype(np.int64), values, axis=2)
        return dense

    def subset(self, indices: np.ndarray) -> CSProfile:
        """These samples only, in this order."""
        return self._take(indices, slice(None))

    def subset_exits(self, exits: np.ndarray) -> CSProfile:
        """These exits' columns only, in this order: the profile of a network running just them (e.g. a
        shallower second look's, cut from the full one's)."""
        return self._take(slice(None), exits)

    def _take(self, samples: np.ndarray | slice, exits: np.ndarray | slice) -> CSProfile:
        def take(a: np.ndarray) -> np.ndarray:
            return a[samples][:, exits]

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else take(a)

        return CSProfile(take(self.confidence), take(self.prediction), take(self.correct), self.labels[samples],
                         dict(self.meta), pick(self.log_probs), pick(self.log_prob_classes))

    ARRAYS: ClassVar[tuple[str, ...]] = ("confidence", "prediction", "correct", "labels", "log_probs",
                                         "log_prob_classes")

    def save(self, path: str | os.PathLike[str]) -> Path:
        arrays: dict[str, np.ndarray] = {
            "confidence": self.confidence.astype(np.float32), "prediction": self.prediction.astype(np.int32),
            "correct": self.correct.astype(bool), "labels": self.labels.astype(np.int32)}
        if self.log_probs is not None:
            arrays["log_probs"] = self.log_probs.astype(np.float16)
        if self.log_prob_classes is not None:
            arrays["log_prob_classes"] = self.log_prob_classes.astype(np.int32)
        return write_arrays(path, "cs-profile", arrays, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CSProfile:
        """Read and check a CS-profile: its arrays, their shapes, dtypes and values (class indices in
        range, confidences in [0, 1], log-probabilities <= 0, each exit's correctness its prediction's)."""
        arrays, meta = read_arrays(path, "cs-profile")
        only_arrays(path, arrays, cls.ARRAYS)
        require_shapes(path, arrays, {"confidence": (SAMPLES, BLOCKS), "prediction": (SAMPLES, BLOCKS),
                                "correct": (SAMPLES, BLOCKS), "labels": (SAMPLES,)})
        kinds = {"confidence": "f", "prediction": "iu", "correct": "b", "labels": "iu", "log_probs": "f",
                 "log_prob_classes": "iu"}
        for name, array in arrays.items():
            if array.dtype.kind not in kinds[name]:
                raise ProfileFormatError(f"{path}: {name} has dtype {array.dtype}")
        log_probs, top = arrays.get("log_probs"), arrays.get("log_prob_classes")
        if log_probs is not None:
            require_shapes(path, arrays, {"confidence": (SAMPLES, BLOCKS), "log_probs": (SAMPLES, BLOCKS, -3)})
        try:
            profile = cls(arrays["confidence"].astype(np.float32), arrays["prediction"].astype(np.int64),
                          arrays["correct"].astype(bool), arrays["labels"].astype(np.int64), meta,
                          None if log_probs is None else log_probs.astype(np.float16),
                          None if top is None else top.astype(np.int64))
        except ProfileFormatError as error:
            raise ProfileFormatError(f"{path}: {error}") from None
        if not np.array_equal(profile.correct, profile.prediction == profile.labels[:, None]):
            raise ProfileFormatError(f"{path}: correct disagrees with prediction == label (damaged?)")
        return profile


def environment(device: str, batch_size: int, dtype: str) -> dict[str, Any]:
    """Where a profile was measured: device name, batch size, dtype and library versions."""
    import torch

    from . import __version__

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else (platform.processor()
                                                                                   or platform.machine())
    return {"device": device, "device_name": name, "batch_size": batch_size, "dtype": dtype,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "einet": __version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _timer(device: torch.device) -> Any:
    """A clock for one block: returns a start() / stop() pair; CUDA events on GPU, ns counter on CPU."""
    import torch

    if device.type == "cuda":
        class CudaTimer:
            def __init__(self) -> None:
                self.start_event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                self.stop_event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

            def start(self) -> None:
                self.start_event.record()

            def stop(self) -> None:
                self.stop_event.record()

            def seconds(self) -> float:  # after the repeat's one synchronize
                return float(self.start_event.elapsed_time(self.stop_event)) / 1e3

        return CudaTimer

    class CpuTimer:
        def start(self) -> None:
            self.begin = time.perf_counter_ns()

        def stop(self) -> None:
            self.end = time.perf_counter_ns()

        def seconds(self) -> float:
            return (self.end - self.begin) / 1e9

    return CpuTimer


def profile_et(model: MultiExitNetwork, input_shape: tuple[int, ...], device: str = "cpu", batch_size: int = 1,
               warmup: int = 10, repeats: int = 50, dtype: str = "float32", progress: bool = True,
               name: str | None = None, threads: int = 1, samples: torch.Tensor | None = None) -> ETRecord:
    """Measure every block's conv-part and branch time on `device` (inputs of `input_shape` without batch).

    Pass real inputs as `samples` ([K, *input_shape]; repeats cycle through them): block
    times depend on the data (on this project's CPU a trained B-AlexNet's last block takes
    1.2 ms on CIFAR images but 0.85 ms on Gaussian noise), and noise is only the fallback.

    The measurement runs on a worker thread with `threads` intra-op threads, exactly as
    :class:`einet.runtime.ElasticRuntime` runs the model, so the profile is what the runtime
    will see. (On a small CPU, torch's thread team in a non-main thread behaves differently
    from the main thread's: profiling in the main thread mispredicts the runtime by up to 3x.)
    """
    import threading

    import torch

    result: list[ETRecord] = []
    errors: list[BaseException] = []

    def measure() -> None:
        torch.set_num_threads(threads)
        try:
            result.append(_measure_et(model, input_shape, device, batch_size, warmup, repeats, dtype, progress,
                                      name, threads, samples))
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    worker = threading.Thread(target=measure, name="einet-profile")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


def _measure_et(model: MultiExitNetwork, input_shape: tuple[int, ...], device: str, batch_size: int, warmup: int,
                repeats: int, dtype: str, progress: bool, name: str | None, threads: int,
                samples: torch.Tensor | None) -> ETRecord:
    import torch
    from tqdm.auto import tqdm

    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    target = torch.device(device)
    torch_dtype = getattr(torch, dtype)
    model = model.to(target, torch_dtype).eval()
    if samples is None:
        samples = torch.randn(batch_size, *input_shape)
    elif tuple(samples.shape[1:]) != tuple(input_shape) or samples.shape[0] < batch_size:
        raise ValueError(f"samples must be [K >= {batch_size}, {', '.join(map(str, input_shape))}], "
                         f"got {tuple(samples.shape)}")
    inputs = samples.to(target, torch_dtype)
    batches = max(1, inputs.shape[0] // batch_size)
    timer = _timer(target)
    n = model.num_exits
    conv_timers = [timer() for _ in range(n)]
    branch_timers = [timer() for _ in range(n)]
    conv = np.zeros((repeats, n))
    branch = np.zeros((repeats, n))
    with torch.inference_mode():
        for r in tqdm(range(warmup + repeats), desc="ET-profile", disable=not progress, leave=False):
            first = (r % batches) * batch_size
            h = inputs[first:first + batch_size]
            for i in range(n):
                conv_timers[i].start()
                h = model.forward_block(i, h)
                conv_timers[i].stop()
                branch_timers[i].start()
                model.forward_exit(i, h).float().softmax(-1).max(-1)  # as the runtime reads an answer
                branch_timers[i].stop()
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            if r >= warmup:
                conv[r - warmup] = [t.seconds() for t in conv_timers]
                branch[r - warmup] = [t.seconds() for t in branch_timers]
    meta = environment(device, batch_size, dtype) | {"model": name or type(model).__name__, "repeats": repeats,
                                                      "warmup": warmup, "input_shape": list(input_shape),
                                                      "threads": threads}
    q = {p: (np.percentile(conv, p, axis=0), np.percentile(branch, p, axis=0)) for p in (50, 90, 99)}
    return ETRecord(q[50][0], q[50][1], q[90][0], q[99][0], q[90][1], q[99][1], meta)


def profile_cs(model: MultiExitNetwork, dataset: ImageDataset | Any, device: str = "cpu", batch_size: int = 500,
               progress: bool = True, name: str | None = None, split: str | None = None,
               extra_meta: Mapping[str, Any] | None = None) -> CSProfile:
    """Every exit's confidence, prediction, correctness and log-probabilities on every sample of `dataset`:
    an ImageDataset (scored without augmentation), a map-style torch Dataset of (image tensor, label)
    or a DataLoader, in their order (see :func:`einet.data.as_batches`).
    `extra_meta` (e.g. zoo name, width, training recipe) is stored in the profile's metadata."""
    import torch
    from tqdm.auto import tqdm

    from .data import as_batches, count_batches

    target = torch.device(device)
    model = model.to(target).eval()
    confidence, prediction, labels, log_probs, top_classes = [], [], [], [], []
    with torch.inference_mode():
        batches = as_batches(dataset, batch_size, augment=False)
        for images, y in tqdm(batches, total=count_batches(dataset, batch_size), desc="CS-profile",
                              disable=not progress, leave=False):
            logp = torch.stack([logits.float().log_softmax(1) for logits in model(images.to(target))], 1)
            best = logp.max(dim=2)
            confidence.append(best.values.exp().cpu())
            prediction.append(best.indices.cpu())
            labels.append(y.cpu())
            if logp.shape[2] <= LOG_PROB_CLASSES:
                log_probs.append(logp.half().cpu())
            else:
                top = logp.topk(LOG_PROB_CLASSES, dim=2)
                log_probs.append(top.values.half().cpu())
                top_classes.append(top.indices.short().cpu())
    if not labels:
        raise ValueError("cannot profile an empty dataset")
    conf = torch.cat(confidence).numpy()
    pred = torch.cat(prediction).numpy().astype(np.int64)
    lab = torch.cat(labels).numpy().astype(np.int64)
    meta = {"model": name or type(model).__name__, "device": device, "samples": int(lab.size), "split": split}
    return CSProfile(np.clip(conf, 0.0, 1.0), pred, pred == lab[:, None], lab, {**meta, **(extra_meta or {})},
                     torch.cat(log_probs).numpy(), torch.cat(top_classes).numpy() if top_classes else None)
