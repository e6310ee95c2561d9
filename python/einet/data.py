"""Datasets from their standard on-disk formats: no torchvision, no downloads.

- MNIST and Fashion-MNIST: the four IDX files (gzipped or not).
- CIFAR-10 and CIFAR-100: the python-version batch folders, read with an
  unpickler that only admits numpy arrays and plain containers.
- Any class-folder image layout (``root/<split>/<class>/*.jpg|png``), as a
  directory or a zip of one; decoded once with Pillow and cached as ``.npy``.

Every loader returns an :class:`ImageArrays` (uint8 images ``[N, H, W, C]``,
int64 labels, class names); :class:`ImageDataset` turns it into normalised
float tensors with the standard augmentations. Corrupt or truncated files raise
:class:`DatasetError` (a ValueError) naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test")

# Per-channel mean and std of the training sets, on pixel values scaled to [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class DatasetError(ValueError):
    """A dataset file is missing, corrupt, truncated or not in the expected format."""


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
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        cut = len(self) - round(fraction * len(self))
        return self.subset(np.sort(order[:cut])), self.subset(np.sort(order[cut:]))


# ---------------------------------------------------------------- IDX (MNIST)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"missing file {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DatasetError(f"{path} is corrupt or truncated: {error}") from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """One IDX file (the MNIST format), gzipped or not, as an array of its declared shape."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetError(f"{path} holds {len(data) - header} bytes of data but its header {shape} needs {expected}")
    # A copy: frombuffer views are read-only, which torch.from_numpy warns about.
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).copy()


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        for folder in (root, root / "raw"):
            if (folder / name).exists():
                return folder / name
    raise DatasetError(f"missing {stem}[.gz] under {root}")


def load_mnist(root: str | os.PathLike[str], split: str = "train", fashion: bool = False) -> ImageArrays:
    """MNIST (or Fashion-MNIST) from its four IDX files in `root` (or `root/raw`)."""
    _check_split(split)
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8:
        raise DatasetError(f"{root}: expected uint8 images [N, H, W] and labels [N], "
                           f"got {images.shape}, {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    classes = FASHION_CLASSES if fashion else tuple(str(d) for d in range(10))
    return ImageArrays(np.ascontiguousarray(images[..., None]), labels.astype(np.int64), classes)


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


# ---------------------------------------------------------------- CIFAR python batches

class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits what CIFAR batches hold (dicts, lists, bytes, numpy arrays) and nothing that can run code."""

    _ALLOWED: frozenset[tuple[str, str]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_batch(path: Path) -> dict[bytes, object]:
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"missing CIFAR batch {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path} is not a readable CIFAR batch: {error}") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise DatasetError(f"{path} is not a CIFAR batch (no 'data' entry)")
    return batch


def _cifar_images(path: Path, batch: dict[bytes, object]) -> np.ndarray:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: data must be [N, 3072], got {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _cifar_folder(root: Path, marker: str) -> Path:
    for folder in (root, *sorted(root.glob("cifar-*-python")), *sorted(root.glob("cifar-*-batches-py"))):
        if (folder / marker).exists():
            return folder
    raise DatasetError(f"no CIFAR python-version folder with {marker!r} under {root}")


def load_cifar10(root: str | os.PathLike[str], split: str = "train") -> ImageArrays:
    """CIFAR-10 from its python-version batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``)."""
    _check_split(split)
    folder = _cifar_folder(Path(root), "batches.meta")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        batch = _load_batch(folder / name)
        images.append(_cifar_images(folder / name, batch))
        labels.append(np.asarray(batch.get(b"labels"), dtype=np.int64))
        if labels[-1].shape != (images[-1].shape[0],):
            raise DatasetError(f"{folder / name}: {images[-1].shape[0]} images but labels {labels[-1].shape}")
    meta = _load_batch_meta(folder / "batches.meta", b"label_names")
    return ImageArrays(np.concatenate(images), np.concatenate(labels), meta)


def load_cifar100(root: str | os.PathLike[str], split: str = "train") -> ImageArrays:
    """CIFAR-100 (fine labels) from its python-version files (``train``, ``test``, ``meta``)."""
    _check_split(split)
    folder = _cifar_folder(Path(root), "meta")
    batch = _load_batch(folder / split)
    images = _cifar_images(folder / split, batch)
    labels = np.asarray(batch.get(b"fine_labels"), dtype=np.int64)
    if labels.shape != (images.shape[0],):
        raise DatasetError(f"{folder / split}: {images.shape[0]} images but fine_labels {labels.shape}")
    return ImageArrays(images, labels, _load_batch_meta(folder / "meta", b"fine_label_names"))


def _load_batch_meta(path: Path, key: bytes) -> tuple[str, ...]:
    try:
        with open(path, "rb") as f:
            meta = _ArraysOnlyUnpickler(f, encoding="bytes").load()
        return tuple(name.decode() for name in meta[key])
    except FileNotFoundError:
        raise DatasetError(f"missing {path}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path} is not a readable CIFAR meta file: {error}") from None


# ---------------------------------------------------------------- class folders

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def cache_dir() -> Path:
    """Where decoded image folders are cached: $EINET_CACHE, else a folder in the system temp dir."""
    return Path(os.environ.get("EINET_CACHE", Path(tempfile.gettempdir()) / "einet-cache"))


def load_image_folder(source: str | os.PathLike[str], split: str | None = "train", cache: bool = True) -> ImageArrays:
    """A class-folder layout ``[prefix/]split/<class>/<image>``, from a directory or a zip of one.

    Classes are the sorted folder names (the usual label order). All images must
    share one size. Decoded arrays are cached (keyed by the source's path, size
    and modification time), so the second load is instant.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"missing image folder or zip {source}")
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{split}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"{source.stem}-{split}-{key}.npz"
    if cache and cached.exists():
        with np.load(cached, allow_pickle=False) as stored:
            return ImageArrays(stored["images"], stored["labels"], tuple(str(c) for c in stored["classes"]))
    arrays = _decode_folder(source, split)
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial.npz")
        np.savez(partial, images=arrays.images, labels=arrays.labels, classes=np.array(arrays.classes))
        os.replace(partial, cached)
    return arrays


def _image_entries(source: Path) -> Iterator[tuple[tuple[str, ...], object]]:
    """(path parts, opener) for every image file in a directory or zip."""
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path.relative_to(source).parts, path
    else:
        try:
            archive = zipfile.ZipFile(source)
        except zipfile.BadZipFile:
            raise DatasetError(f"{source} is neither a directory nor a readable zip") from None
        for name in sorted(archive.namelist()):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield tuple(Path(name).parts), (archive, name)


def _decode_folder(source: Path, split: str | None) -> ImageArrays:
    from PIL import Image, UnidentifiedImageError

    files: list[tuple[str, object]] = []
    for parts, opener in _image_entries(source):
        if split is None:
            if len(parts) >= 2:
                files.append((parts[-2], opener))
        elif len(parts) >= 3 and parts[-3] == split:
            files.append((parts[-2], opener))
    if not files:
        where = f"'{split}/<class>/<image>'" if split else "'<class>/<image>'"
        raise DatasetError(f"no images in the layout {where} under {source}")
    classes = tuple(sorted({label for label, _ in files}))
    index = {name: i for i, name in enumerate(classes)}
    images = []
    for _, opener in files:
        try:
            if isinstance(opener, Path):
                image = Image.open(opener)
            else:
                archive, name = opener  # type: ignore[misc]
                image = Image.open(io.BytesIO(archive.read(name)))
            image.load()
        except (UnidentifiedImageError, OSError, zipfile.BadZipFile) as error:
            raise DatasetError(f"cannot decode image {opener}: {error}") from None
        array = np.asarray(image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB"))
        images.append(array if array.ndim == 3 else array[..., None])
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise DatasetError(f"images under {source} differ in size: {sorted(shapes)[:3]}...")
    labels = np.array([index[label] for label, _ in files], dtype=np.int64)
    return ImageArrays(np.stack(images), labels, classes)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


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
    raise ValueError(f"unknown dataset {name!r}: expected mnist, fashion-mnist, cifar10, cifar100 or folder")


# ---------------------------------------------------------------- torch side

class ImageDataset:
    """Normalised float tensors from ImageArrays, with batch-wise augmentation.

    Augmentation (training): random crop with `pad` pixels of zero padding and,
    for colour images, a random horizontal flip: the standard CIFAR recipe.
    Batches are produced from tensors held in memory, which on a small CPU is
    much faster than a per-sample DataLoader.
    """

    def __init__(self, arrays: ImageArrays, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 augment: bool = False, pad: int = 4) -> None:
        import torch

        images = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float().div_(255.0)
        if mean is None or std is None:
            mean = tuple(images.mean(dim=(0, 2, 3)).tolist())
            std = tuple(images.std(dim=(0, 2, 3)).tolist())
        if len(mean) != arrays.channels or len(std) != arrays.channels:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {arrays.channels} channels")
        self.mean, self.std = tuple(mean), tuple(std)
        view = (1, arrays.channels, 1, 1)
        self.images = (images - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)
        self.labels = torch.from_numpy(arrays.labels)
        self.classes = arrays.classes
        self.augment = augment
        self.pad = pad

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to(self, device: str | torch.device) -> ImageDataset:
        """Move the tensors (e.g. to a GPU, where batches and augmentation then stay)."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches; augmented when the dataset was built with augment=True."""
        import torch

        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for first in range(0, len(self), batch_size):
            index = order[first:first + batch_size]
            images = self.images[index]
            if self.augment:
                images = _augment(images, self.pad, generator)
            yield images, self.labels[index]


def _augment(images: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Random crops of the zero-padded batch (one offset per image) and, for colour, random flips."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    device = images.device
    if device.type != "cpu":
        generator = None  # a CPU generator cannot draw on the GPU: use the device's (seeded by manual_seed)
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
    index_n = torch.arange(n, device=device)[:, None, None, None]
    out = padded[index_n, torch.arange(c, device=device)[None, :, None, None], rows, cols]
    if c == 3:
        flip = torch.rand(n, generator=generator, device=device) < 0.5
        out[flip] = out[flip].flip(3)
    return out


def dataset_for(name: str, arrays: ImageArrays, train: bool) -> ImageDataset:
    """An ImageDataset with the standard normalisation of `name` (computed from the data if unknown)."""
    mean, std = NORMALISATION.get(name, (None, None))
    return ImageDataset(arrays, mean, std, augment=train)
