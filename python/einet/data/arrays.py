"""What every loader returns (:class:`ImageArrays`), what a bad file raises (:class:`DatasetError`),
and the checks the loaders share: decoding errors translated, sizes held to :mod:`einet.data.limits`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ..errors import EinetValueError
from . import limits

SPLITS = ("train", "test")
_CHUNK = 1 << 24  # bytes read at once from a dataset file


class DatasetError(EinetValueError):
    """A dataset file is missing, corrupt, truncated, too large or not in the expected format."""


@contextmanager
def _malformed(description: str) -> Iterator[None]:
    """Re-raise anything decoding a file raises as a DatasetError that starts with `description` (naming the file).

    Decoders of untrusted bytes (gzip, pickle, zipfile, Pillow) raise a wide and
    undocumented range of exceptions on bad input: zlib.error, LookupError,
    OverflowError, RuntimeError (an encrypted zip member), NotImplementedError
    (deflate64), Pillow's DecompressionBombError, SyntaxError... All of them mean
    that the file is bad, so all are translated here, around the decoding calls only.
    """
    try:
        yield
    except DatasetError:
        raise
    except FileNotFoundError as error:
        raise DatasetError(f"missing file {error.filename}") from None
    except Exception as error:
        raise DatasetError(f"{description}: {type(error).__name__}: {error}") from None


def _check_size(what: object, size: int, cap: str, unit: str = "bytes") -> None:
    """Refuse `size` above the cap named `cap` in :mod:`einet.data.limits` (named in the message, so it can be
    raised); the cap is read now, so a value assigned there applies."""
    limit = getattr(limits, cap)
    if size > limit:
        raise DatasetError(f"{what} holds {size} {unit}, above {cap} = {limit}; "
                           f"if it is genuine, raise einet.data.limits.{cap}")


_LABEL_BYTES = np.dtype(np.int64).itemsize


def _check_split_size(what: object, count: int, image_bytes: int) -> None:
    """Refuse a split of `count` images of `image_bytes` each (plus their labels) above MAX_DATASET_BYTES,
    before its arrays are allocated."""
    _check_size(what, count * (image_bytes + _LABEL_BYTES), "MAX_DATASET_BYTES")


@dataclass(frozen=True)
class ImageArrays:
    """A split of an image classification dataset, as arrays."""

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DatasetError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise DatasetError(f"{self.images.shape[0]} images but labels of shape {self.labels.shape}")
        if self.labels.size and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise DatasetError(f"labels outside [0, {len(self.classes)}): {self.labels.min()}..{self.labels.max()}")

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def subset(self, indices: np.ndarray) -> ImageArrays:
        return ImageArrays(self.images[indices], self.labels[indices], self.classes)

    def split(self, fraction: float, seed: int = 0) -> tuple[ImageArrays, ImageArrays]:
        """A seeded random split into (1 - fraction, fraction): e.g. a held-out part of the training set."""
        if not 0.0 < fraction < 1.0:
            raise EinetValueError(f"fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        cut = len(self) - round(fraction * len(self))
        return self.subset(np.sort(order[:cut])), self.subset(np.sort(order[cut:]))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise EinetValueError(f"split must be one of {SPLITS}, got {split!r}")
