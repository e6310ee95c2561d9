"""ET- and CS-profiles, in einet's checked ``.npz`` container (:mod:`einet.formats.npz`); loading
also checks every required array and its shape. Numpy only; measuring them is :mod:`einet.profiling`.

- ET-profile (execution time): per block, the conv-part and branch times on a device, after
  warm-up, over repeats: median (what the planner uses) and the 90th/99th percentiles.
- CS-profile (confidence score): per sample and exit, the confidence (max softmax), the
  predicted class and whether it is right (and, optionally, the log-probabilities).

Both can be cut to a subset: of blocks or exits (a network's variant, see :mod:`einet.variants`)
or of samples (a split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from ..planner import ETProfile
from ..validation import MAX_CLASSES
from .npz import ProfileFormatError, only_arrays, read_arrays, require_shapes, write_arrays

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
        larger one: einet.variants.variant_exits), provenance kept."""
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

    ``log_probs`` (optional, float16 [S, N, K]) are each exit's log-probabilities: all classes
    when there are at most ``LOG_PROB_CLASSES`` (K = classes), else the top K with their class
    indices in ``log_prob_classes``. They feed rule ``ensemble`` and the richer predictor
    signals; a profile measured without them has none (``log_probs is None``).
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
            raise ProfileFormatError("this CS-profile has no log-probabilities: regenerate it with "
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
