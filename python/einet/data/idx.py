"""MNIST and Fashion-MNIST from their IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .arrays import _CHUNK, DatasetError, ImageArrays, _check_size, _check_split, _check_split_size, _malformed

if TYPE_CHECKING:
    import numpy.typing as npt

_IDX_TYPES: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                                         0x0E: ">f8"}


def _read_up_to(file: io.BufferedIOBase, limit: int) -> bytearray:
    """At most `limit` bytes, read in chunks: memory follows what the file really holds, not what it claims."""
    data = bytearray()
    while len(data) < limit and (chunk := file.read(min(_CHUNK, limit - len(data)))):
        data += chunk
    return data


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """One IDX file (the MNIST format), gzipped or not, as an array of its declared shape.

    The header's shape is checked against MAX_IDX_BYTES before any payload is
    read, and the payload is read in chunks up to that size (plus one byte, to
    detect extra data): a small gzip that inflates to gigabytes, or a header
    claiming a huge shape, is refused without allocating it.
    """
    path = Path(path)
    with _malformed(f"{path} is corrupt or truncated"), (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_TYPES:
            raise DatasetError(f"{path} is not an IDX file (bad magic number {magic.hex()})")
        dims = f.read(4 * magic[3])
        if len(dims) < 4 * magic[3]:
            raise DatasetError(f"{path} is truncated inside its header")
        shape = struct.unpack(f">{magic[3]}I", dims)
        dtype = np.dtype(_IDX_TYPES[magic[2]])
        size = math.prod(shape) * dtype.itemsize
        _check_size(f"{path} (header {shape})", size, "MAX_IDX_BYTES")
        payload = _read_up_to(f, size + 1)
    if len(payload) != size:
        held = f"more than {size}" if len(payload) > size else len(payload)
        raise DatasetError(f"{path} holds {held} bytes of data but its header {shape} needs {size}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)  # writable: a view of the bytearray


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
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{root}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    _check_split_size(f"the {split} split under {root}", images.shape[0], math.prod(images.shape[1:]))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if labels.ndim != 1 or labels.dtype.kind not in "iu":  # float labels would be truncated silently
        raise DatasetError(f"{root}: expected integer labels [N], got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    classes = FASHION_CLASSES if fashion else tuple(str(d) for d in range(10))
    return ImageArrays(np.ascontiguousarray(images[..., None]), labels.astype(np.int64), classes)


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
