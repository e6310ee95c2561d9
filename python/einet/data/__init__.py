"""Datasets from their standard on-disk formats: no torchvision, no downloads.

- MNIST and Fashion-MNIST: the four IDX files, gzipped or not (:mod:`einet.data.idx`).
- CIFAR-10 and CIFAR-100: the python-version batch folders, read with an
  unpickler that only admits plain numeric numpy arrays and plain containers
  (:mod:`einet.data.cifar`).
- Any class-folder image layout (``root/<split>/<class>/*.jpg|png``), as a
  directory or a zip of one; decoded once with Pillow and cached (see
  :func:`cache_dir`; :mod:`einet.data.folder`).
- Any torch ``Dataset`` or ``DataLoader`` (:func:`as_batches`; :mod:`einet.data.batches`), whose
  batches are checked: floating-point finite images ``[B, C, H, W]`` and integer class labels.

Every file loader returns an :class:`ImageArrays` (uint8 images ``[N, H, W, C]``,
int64 labels, class names; :mod:`einet.data.arrays`); :class:`ImageDataset`
(:mod:`einet.data.dataset`) turns it into normalised float tensors with the standard
augmentations. Files are untrusted input: a corrupt, truncated, oversized or crafted
file raises :class:`DatasetError` (a ValueError) naming the file and what is wrong,
never runs code from the file, and never makes the loader allocate much more than the
caps of :mod:`einet.data.limits`. The caps are read at load time: assign a larger value
(``einet.data.limits.MAX_IDX_BYTES = ...``) for a genuine file above one.

Everything public is importable from ``einet.data`` itself. Importing it needs numpy
only: torch and Pillow are imported when first used.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EinetValueError
from . import limits
from .arrays import SPLITS, DatasetError, ImageArrays
from .batches import ImageShape, as_batches, count_batches, loader_is_sharded, shard_indices
from .cifar import load_cifar10, load_cifar100
from .dataset import NORMALISATION, ImageDataset, dataset_for, timing_arrays, timing_images, trained_with_flips
from .folder import IMAGE_SUFFIXES, cache_dir, load_image_folder
from .idx import FASHION_CLASSES, load_mnist, read_idx

__all__ = [
    "DATASETS",
    "FASHION_CLASSES",
    "IMAGE_SUFFIXES",
    "NORMALISATION",
    "SPLITS",
    "DatasetError",
    "ImageArrays",
    "ImageDataset",
    "ImageShape",
    "as_batches",
    "cache_dir",
    "count_batches",
    "dataset_for",
    "limits",
    "load",
    "load_cifar10",
    "load_cifar100",
    "load_image_folder",
    "load_mnist",
    "loader_is_sharded",
    "read_idx",
    "shard_indices",
    "timing_arrays",
    "timing_images",
    "trained_with_flips",
]


DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "folder")  # the names :func:`load` knows


def load(name: str, root: str | os.PathLike[str], split: str = "train") -> ImageArrays:
    """A dataset by name: mnist, fashion-mnist, cifar10, cifar100, or an image folder / zip path."""
    if name == "mnist":
        return load_mnist(root, split)
    if name == "fashion-mnist":
        return load_mnist(root, split, fashion=True)
    if name == "cifar10":
        root_path = Path(root)
        if root_path.suffix == ".zip" or (root_path.is_dir() and (root_path / "train").is_dir()):
            return load_image_folder(root_path, split)
        return load_cifar10(root, split)
    if name == "cifar100":
        return load_cifar100(root, split)
    if name == "folder":
        return load_image_folder(root, split)
    raise EinetValueError(f"unknown dataset {name!r}: expected {', '.join(DATASETS[:-1])} or {DATASETS[-1]}")
