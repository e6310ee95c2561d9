"""The held-out split, recorded once and used everywhere.

The predictor, the ensemble weights, the time-zero answer and every choice a selection makes are
fitted on a held-out part of the training split, never on images the network was trained on.
That part is cut by a seeded random split (:meth:`einet.data.ImageArrays.split`); a checkpoint
and a bundle record the cut (fraction, seed) and a fingerprint of the data it was cut from, so a
later stage cuts exactly the same images or refuses, instead of being told the settings again by
a user who may mistype them (a mismatch would silently let training images into the held-out data).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EinetValueError

if TYPE_CHECKING:
    from ..data import ImageArrays


def fingerprint(arrays: ImageArrays) -> str:
    """SHA-256 over a split's images, labels and class names: the same data, the same fingerprint."""
    digest = hashlib.sha256(repr((arrays.images.shape, arrays.classes)).encode())
    digest.update(np.ascontiguousarray(arrays.images).tobytes())
    digest.update(arrays.labels.astype("<i8").tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class HeldOutSplit:
    """`fraction` of the training data held out (seed `seed`), cut from the data of `data` (its fingerprint)."""

    fraction: float
    seed: int
    data: str

    def __post_init__(self) -> None:
        from ..validation import number

        number("the held-out fraction", self.fraction, 0.0, 0.99)
        number("the split's seed", self.seed, 0, 2**32 - 1, integer=True)
        if not (isinstance(self.data, str) and len(self.data) == 64):
            raise EinetValueError(f"the split's data fingerprint must be a SHA-256 hex digest, got {self.data!r:.80}")

    @classmethod
    def of(cls, arrays: ImageArrays, fraction: float, seed: int) -> HeldOutSplit:
        return cls(fraction, seed, fingerprint(arrays))

    def apply(self, arrays: ImageArrays, what: str = "the data") -> tuple[ImageArrays, ImageArrays]:
        """(training part, held-out part) of `arrays`, which must be the data the split was recorded on."""
        if fingerprint(arrays) != self.data:
            raise EinetValueError(f"{what} is not the training data this split was recorded on (its fingerprint "
                                  f"differs): give the data the network was trained on")
        if self.fraction == 0:
            return arrays, arrays.subset(arrays.labels[:0])
        return arrays.split(self.fraction, seed=self.seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: object, what: str = "split") -> HeldOutSplit:
        if not isinstance(record, Mapping) or set(record) != {"fraction", "seed", "data"}:
            raise EinetValueError(f"{what} must be an object with fraction, seed and data, got {record!r:.120}")
        return cls(record["fraction"], record["seed"], record["data"])


def resolve(recorded: HeldOutSplit | None, fraction: float | None, seed: int | None, arrays: ImageArrays,
            source: str) -> HeldOutSplit:
    """The split a stage uses: the one `source` recorded (options that contradict it are refused),
    else the options given (defaults 0.1 and 0: what ``einet train`` holds out)."""
    if recorded is None:
        return HeldOutSplit.of(arrays, 0.1 if fraction is None else fraction, 0 if seed is None else seed)
    for name, given, kept in (("--holdout", fraction, recorded.fraction), ("--seed", seed, recorded.seed)):
        if given is not None and given != kept:
            raise EinetValueError(f"{name} {given}: {source} was trained with {name} {kept} held out; leave {name} out "
                                  "to use the recorded split")
    return recorded
