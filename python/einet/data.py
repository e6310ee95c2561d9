"""Datasets from their standard on-disk formats: no torchvision, no downloads.

- MNIST and Fashion-MNIST: the four IDX files (gzipped or not).
- CIFAR-10 and CIFAR-100: the python-version batch folders, read with an
  unpickler that only admits plain numeric numpy arrays and plain containers.
- Any class-folder image layout (``root/<split>/<class>/*.jpg|png``), as a
  directory or a zip of one; decoded once with Pillow and cached (see
  :func:`cache_dir`).
- Any torch ``Dataset`` or ``DataLoader`` (:func:`as_batches`), whose batches are
  checked: floating-point finite images ``[B, C, H, W]`` and integer class labels.

Every file loader returns an :class:`ImageArrays` (uint8 images ``[N, H, W, C]``,
int64 labels, class names); :class:`ImageDataset` turns it into normalised
float tensors with the standard augmentations. Files are untrusted input: a
corrupt, truncated, oversized or crafted file raises :class:`DatasetError` (a
ValueError) naming the file and what is wrong, never runs code from the file,
and never makes the loader allocate much more than the caps below. The caps are
module constants: assign a larger value (``einet.data.MAX_IDX_BYTES = ...``)
for a genuine file above one.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import hmac
import io
import math
import os
import pickle
import secrets
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Optional

import numpy as np

from .validation import open_regular

if TYPE_CHECKING:
    import numpy.typing as npt
    import torch
    from PIL import Image

SPLITS = ("train", "test")
ImageShape = tuple[Optional[int], Optional[int], Optional[int]]  # (channels, height, width); None: any

# Size caps, generous for the real datasets: the largest MNIST-family IDX file
# (EMNIST ByClass images) holds 547 MB, the largest CIFAR file (CIFAR-100 'train')
# 155 MB, and encoded images are rarely above a few MB.
MAX_IDX_BYTES = 1 << 30  # decompressed payload of one IDX file
MAX_CIFAR_FILE_BYTES = 256 << 20  # one CIFAR python-version file (batch or meta)
MAX_IMAGE_BYTES = 64 << 20  # one encoded image file (or zip member) of an image folder
MAX_IMAGE_PIXELS = 1 << 24  # one image of an image folder, from its header (4096 x 4096)
MAX_DATASET_BYTES = 1 << 30  # the decoded arrays of one split: uint8 images and int64 labels

# Per-channel mean and std of the training sets, on pixel values scaled to [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class DatasetError(ValueError):
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
    """Refuse `size` above the module constant named `cap` (named in the message, so it can be raised)."""
    limit = globals()[cap]
    if size > limit:
        raise DatasetError(f"{what} holds {size} {unit}, above {cap} = {limit}; "
                           f"if it is genuine, raise einet.data.{cap}")


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
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        cut = len(self) - round(fraction * len(self))
        return self.subset(np.sort(order[:cut])), self.subset(np.sort(order[cut:]))


# ---------------------------------------------------------------- IDX (MNIST)

_IDX_TYPES: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                                         0x0E: ">f8"}
_CHUNK = 1 << 24


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


# ---------------------------------------------------------------- CIFAR python batches
#
# numpy's own pickle constructors trust the file: _reconstruct allocates any shape,
# scalar() without data allocates whatever size its dtype claims, and an array state
# whose dtype claims object items makes numpy read past the data (a segfault). So the
# unpickler maps numpy's names to the checked stand-ins below, which only rebuild plain
# numeric arrays from bytes of exactly the right length.

_PLAIN_KINDS = "biuf"  # bool, integers, floats


def _text(value: object) -> object:
    """Python 2 pickles (the CIFAR files) hold str, which encoding='bytes' turns into bytes."""
    return value.decode("ascii") if isinstance(value, bytes) else value


class _PickledDtype:
    """A pickled numpy dtype, kept to a plain numeric type and its byte order."""

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        spec = _text(spec)
        if not isinstance(spec, str) or np.dtype(spec).kind not in _PLAIN_KINDS:
            raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r}")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        byteorder = _text(state[1])
        if byteorder in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(byteorder)


class _PickledArray(np.ndarray):
    """A pickled numpy array: its state is checked before numpy's own __setstate__ sees it."""

    def __setstate__(self, state: tuple[object, ...]) -> None:
        version, shape, dtype, fortran, data = state
        if not (isinstance(dtype, _PickledDtype) and isinstance(shape, tuple)
                and all(isinstance(n, int) and n >= 0 for n in shape)
                and isinstance(data, bytes) and len(data) == math.prod(shape) * dtype.dtype.itemsize):
            raise pickle.UnpicklingError("malformed numpy array (dtype, shape and data do not agree)")
        # numpy checks `version` itself; its stub wants a numpy bool for the flag, but takes a bool
        super().__setstate__((version, shape, dtype.dtype, bool(fortran), data))  # type: ignore[arg-type]


_NDARRAY = object()  # what 'numpy.ndarray' unpickles to: only _reconstruct accepts it


def _reconstruct(cls: object, shape: object, typecode: object) -> _PickledArray:
    """numpy's array constructor; numpy always pickles shape (0,) and sets the real one in __setstate__."""
    if cls is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    return _PickledArray(0, np.uint8)


def _scalar(dtype: object, data: object = None) -> object:
    """numpy's scalar constructor, from exactly one item's bytes."""
    if not (isinstance(dtype, _PickledDtype) and isinstance(data, bytes) and len(data) == dtype.dtype.itemsize):
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype.dtype)[0]


def _latin1(text: object, encoding: object) -> bytes:
    """_codecs.encode as pickles use it (bytes under protocol 2 are latin-1 text); other codecs are refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r}")
    return text.encode("latin1")


_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _PickledDtype, ("_codecs", "encode"): _latin1,
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits what CIFAR files hold (dicts, lists, bytes, plain numeric numpy arrays) and nothing that can run code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PICKLE_GLOBALS:
            return _PICKLE_GLOBALS[module, name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> object:
    with _malformed(f"{path} is not a readable CIFAR file"), open(path, "rb") as f:
        _check_size(path, os.fstat(f.fileno()).st_size, "MAX_CIFAR_FILE_BYTES")
        return _ArraysOnlyUnpickler(f, encoding="bytes").load()


def _load_batch(path: Path, labels_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3], labels [N]) of one batch file.

    Types and lengths are checked before numpy converts anything: a pickle can repeat
    one shared (memoised) list many times, and np.asarray would expand it into an
    array thousands of times the size of the file.
    """
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or labels_key not in batch:
        raise DatasetError(f"{path} is not a CIFAR batch (no {b'data'!r} and {labels_key!r} entries)")
    data, labels = batch[b"data"], batch[labels_key]
    if not isinstance(data, np.ndarray):
        raise DatasetError(f"{path}: data must be a uint8 array [N, 3072], got a {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: data must be uint8 [N, 3072], got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), _class_indices(labels, data.shape[0], num_classes,
                                                                             f"{path}: {labels_key.decode()}")


def _class_indices(labels: object, count: int, num_classes: int, what: str) -> np.ndarray:
    """`count` labels (a list of integers, or a 1-D integer array) as int64 class indices in [0, num_classes)."""
    if isinstance(labels, np.ndarray) and labels.shape == (count,) and labels.dtype.kind in "iu":
        labels = labels.tolist()
    if not isinstance(labels, list) or len(labels) != count:
        got = (f"{len(labels)} items" if isinstance(labels, list) else f"{labels.dtype} {labels.shape}"
               if isinstance(labels, np.ndarray) else f"a {type(labels).__name__}")
        raise DatasetError(f"{what} must be a list (or 1-D integer array) of {count} class indices, got {got}")
    for index, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise DatasetError(f"{what}[{index}] is a {type(label).__name__}, not an integer")
        if not 0 <= label < num_classes:
            raise DatasetError(f"{what}[{index}] is {label}, outside [0, {num_classes})")
    return np.array(labels, dtype=np.int64)


def _load_meta(path: Path, key: bytes) -> tuple[str, ...]:
    """The class names; they must be distinct, so that a pickle repeating one shared name cannot expand."""
    meta = _unpickle(path)
    names = meta.get(key) if isinstance(meta, dict) else None
    if not (isinstance(names, list) and all(isinstance(name, (bytes, str)) for name in names)
            and len(set(names)) == len(names)):
        raise DatasetError(f"{path} is not a CIFAR meta file with {key.decode()} (a list of distinct names)")
    with _malformed(f"{path} is not a CIFAR meta file with {key.decode()}"):
        return tuple(name.decode() if isinstance(name, bytes) else name for name in names)


def _cifar_folder(root: Path, marker: str) -> Path:
    for folder in (root, *sorted(root.glob("cifar-*-python")), *sorted(root.glob("cifar-*-batches-py"))):
        if (folder / marker).exists():
            return folder
    raise DatasetError(f"no CIFAR python-version folder with {marker!r} under {root}")


def load_cifar10(root: str | os.PathLike[str], split: str = "train") -> ImageArrays:
    """CIFAR-10 from its python-version batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``)."""
    _check_split(split)
    folder = _cifar_folder(Path(root), "batches.meta")
    classes = _load_meta(folder / "batches.meta", b"label_names")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = zip(*(_load_batch(folder / name, b"labels", len(classes)) for name in names))
    _check_split_size(f"the {split} split under {folder}", sum(len(part) for part in labels), 3 * 32 * 32)
    return ImageArrays(np.concatenate(images), np.concatenate(labels), classes)


def load_cifar100(root: str | os.PathLike[str], split: str = "train") -> ImageArrays:
    """CIFAR-100 (fine labels) from its python-version files (``train``, ``test``, ``meta``)."""
    _check_split(split)
    folder = _cifar_folder(Path(root), "meta")
    classes = _load_meta(folder / "meta", b"fine_label_names")
    images, labels = _load_batch(folder / split, b"fine_labels", len(classes))
    _check_split_size(f"the {split} split under {folder}", len(labels), 3 * 32 * 32)
    return ImageArrays(images, labels, classes)


# ---------------------------------------------------------------- class folders

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_CACHE_FORMAT = 3  # bump when the cached content or the fingerprint changes
_CACHE_KEY = "cache.key"  # the user's secret that authenticates the entries of a cache directory
_KEY_BYTES = 32
_MAC_BYTES = hashlib.sha256().digest_size


def cache_dir() -> Path:
    """Where decoded image folders are cached: $EINET_CACHE_DIR if set, else ``einet/`` in the user's cache
    directory ($XDG_CACHE_HOME, else ~/.cache): never a shared temporary folder, where others could plant entries."""
    if os.environ.get("EINET_CACHE_DIR"):
        return Path(os.environ["EINET_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "einet"


def load_image_folder(source: str | os.PathLike[str], split: str | None = "train", cache: bool = True) -> ImageArrays:
    """A class-folder layout ``[prefix/]split/<class>/<image>``, from a directory or a zip of one.

    Classes are the sorted folder names (the usual label order). All images must
    share one size; 16-bit grey images are scaled to 8 bits (their high byte, as
    Pillow does for 16-bit colour). Decoded arrays are cached in :func:`cache_dir`,
    so the second load is fast; an entry is used only if it was made from the
    source's current content and carries a valid HMAC under the user's cache key,
    else it is rebuilt.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"missing image folder or zip {source}")
    if not cache:
        return _decode_folder(source, split)
    directory = cache_dir()
    try:
        key = _cache_key(directory)
    except OSError as error:
        warnings.warn(f"could not cache the decoded {source} in {directory}: {error}", stacklevel=2)
        return _decode_folder(source, split)
    fingerprint = _fingerprint(source, split)
    entry = directory / f"{source.stem}-{split}-{fingerprint[:16]}.npz"
    arrays = _read_cache(entry, fingerprint, key)
    if arrays is None:
        arrays = _decode_folder(source, split)
        try:
            _write_cache(entry, arrays, fingerprint, key)
        except OSError as error:
            warnings.warn(f"could not cache the decoded {source} as {entry}: {error}", stacklevel=2)
    return arrays


def _cache_key(directory: Path) -> bytes:
    """The user's secret key for the entries of the cache `directory`, made on first use (readable by the user only).

    Entries carry an HMAC under this key, so an entry planted by someone who can write to
    the directory but cannot read the key is rejected. A new key is written under a unique
    name and hard-linked into place, which fails if the key exists: of processes making it
    at once, one wins and all read the winner's complete key.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / _CACHE_KEY
    with suppress(FileNotFoundError):
        return _read_key(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{_CACHE_KEY}.")  # O_CREAT | O_EXCL, mode 0o600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        with suppress(FileExistsError):  # another process made the key first
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    """The key at `path`, if it is a regular file of the right size that only its owner, this user, can read."""
    with open_regular(path, follow_symlinks=False) as f:
        info = os.fstat(f.fileno())
        key = f.read(_KEY_BYTES + 1)
    others_can_read = hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o077)
    if len(key) != _KEY_BYTES or others_can_read:
        raise OSError(errno.EINVAL, f"not a cache key of {_KEY_BYTES} bytes readable by you only (delete it)",
                      str(path))
    return key


def _directory_images(source: Path) -> list[Path]:
    """The image files under a directory, sorted. Anything not a directory counts, so that a FIFO or a device
    with an image suffix is refused when read (see :func:`einet.validation.open_regular`), not silently skipped."""
    return sorted(path for path in source.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir())


def _in_split(parts: tuple[str, ...], split: str | None) -> bool:
    """Whether the image at `parts` is in the layout ``[prefix/]split/<class>/<image>`` (``<class>/<image>``
    anywhere when `split` is None)."""
    return (split is None and len(parts) >= 2) or (len(parts) >= 3 and parts[-3] == split)


def _fingerprint(source: Path, split: str | None) -> str:
    """The source as it is now: its path, the split, and the SHA-256 of the content of the zip (of each image of
    the split in a folder). Content, not size and mtime: an edit that keeps the size and restores the mtime shows."""
    if source.is_dir():
        files = [path for path in _directory_images(source) if _in_split(path.relative_to(source).parts, split)]
    else:
        files = [source]
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{source.resolve()}|{split}".encode())
    for path in files:
        content = hashlib.sha256()
        with _malformed(f"cannot read {path}"), open_regular(path) as f:
            while chunk := f.read(_CHUNK):
                content.update(chunk)
        digest.update(f"|{path.relative_to(source)}|{content.hexdigest()}".encode())
    return digest.hexdigest()


def _read_cache(entry: Path, fingerprint: str, key: bytes) -> ImageArrays | None:
    """The cached arrays if `entry` is a regular file with a valid HMAC under `key`, made from this source;
    otherwise None, and a bad entry is removed.

    The entry is read whole and its HMAC checked before numpy parses any of it: the
    headers of a planted .npz could otherwise make numpy allocate whatever they claim.
    """
    try:
        with open_regular(entry, follow_symlinks=False) as f:
            size = os.fstat(f.fileno()).st_size
            if size > 2 * MAX_DATASET_BYTES:  # one split (up to MAX_DATASET_BYTES) and its class names: not einet's
                raise ValueError(f"{size} bytes")
            content = f.read(size)
        if hmac.compare_digest(content[:_MAC_BYTES],
                               hmac.new(key, memoryview(content)[_MAC_BYTES:], hashlib.sha256).digest()):
            npz = io.BytesIO(content)  # shares the bytes; zipfile finds the archive after the MAC
            npz.seek(_MAC_BYTES)
            with np.load(npz, allow_pickle=False) as stored:
                if str(stored["source"]) == fingerprint:
                    return ImageArrays(stored["images"], stored["labels"], tuple(str(c) for c in stored["classes"]))
    except FileNotFoundError:
        return None
    except Exception:  # not a regular file, unreadable, or whatever numpy or zipfile raise on it
        pass
    warnings.warn(f"rebuilding the invalid cache entry {entry}", stacklevel=3)
    with suppress(OSError):  # a read-only cache: the rebuilt arrays are then returned uncached
        entry.unlink()
    return None


def _write_cache(entry: Path, arrays: ImageArrays, fingerprint: str, key: bytes) -> None:
    """Write the HMAC under `key` of an .npz of the arrays and the fingerprint, then the .npz, under a unique
    temporary name; fsync, then rename: readers and concurrent writers never see half a file."""
    npz = io.BytesIO()
    np.savez(npz, images=arrays.images, labels=arrays.labels, classes=np.array(arrays.classes),
             source=np.array(fingerprint))
    fd, temporary = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(hmac.new(key, npz.getbuffer(), hashlib.sha256).digest())
            f.write(npz.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, entry)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


_ImageFile = tuple[tuple[str, ...], str, Callable[[], bytes]]  # path parts, name, reader (checks MAX_IMAGE_BYTES)


def _image_files(source: Path, stack: ExitStack) -> Iterator[_ImageFile]:
    """Every image file in a directory or zip (kept open by `stack`)."""
    if source.is_dir():
        for path in _directory_images(source):
            yield path.relative_to(source).parts, str(path), partial(_read_image_file, path)
        return
    with _malformed(f"{source} is neither a directory nor a readable zip"):
        archive = stack.enter_context(zipfile.ZipFile(stack.enter_context(open_regular(source))))
    for member in sorted(archive.infolist(), key=lambda m: m.filename):
        inside = PureWindowsPath(member.filename)  # splits on '/' and '\\', and sees drives and roots
        if inside.drive or inside.root or ".." in inside.parts:
            raise DatasetError(f"{source}: refusing member {member.filename!r} (an absolute or '..' path)")
        if inside.suffix.lower() in IMAGE_SUFFIXES:
            name = f"{source}:{member.filename}"
            yield inside.parts, name, partial(_read_member, archive, member, name)


def _read_image_file(path: Path) -> bytes:
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        _check_size(path, size, "MAX_IMAGE_BYTES")
        return f.read(size)


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, name: str) -> bytes:
    _check_size(name, member.file_size, "MAX_IMAGE_BYTES")  # zipfile reads no more than the declared size
    return archive.read(member)


def _channels(mode: str) -> int:
    """How many channels :func:`_pixels` makes of an image of this Pillow mode: grey ones keep one."""
    return 1 if mode in ("L", "1") or mode.startswith("I") else 3


def _pixels(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, C]: grey stays one channel, 16-bit grey keeps its high byte, everything else becomes RGB.

    Pillow's own conversion of 16-bit grey to 8 bits clips at 255, which turns
    most of a 16-bit image white; the high byte is the proper scaling (and what
    Pillow keeps of 16-bit colour images).
    """
    if image.mode.startswith("I"):  # I;16, I;16B... (16-bit grey PNG), or I (32-bit)
        array = np.asarray(image)
        if array.size and (array.min() < 0 or array.max() > 0xFFFF):
            raise ValueError(f"{image.mode} pixel values outside 16 bits")
        return (array.astype(np.uint16) >> 8).astype(np.uint8)[..., None]
    array = np.asarray(image.convert("L" if _channels(image.mode) == 1 else "RGB"))
    return array if array.ndim == 3 else array[..., None]


def _declared_shape(name: str, image: Image.Image) -> tuple[int, int, int]:
    """The [H, W, C] an opened image will decode to, from its header alone (within MAX_IMAGE_PIXELS)."""
    _check_size(name, image.width * image.height, "MAX_IMAGE_PIXELS", unit="pixels")
    return image.height, image.width, _channels(image.mode)


def _decode_folder(source: Path, split: str | None) -> ImageArrays:
    """Decode the split's images into one array, allocated from the first image's header once the split's size
    (count x that shape) is known to be within MAX_DATASET_BYTES: every image must have that shape."""
    from PIL import Image

    with ExitStack() as stack:
        files = [(parts[-2], name, read) for parts, name, read in _image_files(source, stack)
                 if _in_split(parts, split)]
        if not files:
            where = f"'{split}/<class>/<image>'" if split else "'<class>/<image>'"
            raise DatasetError(f"no images in the layout {where} under {source}")
        images = np.empty((0, 0, 0, 0), np.uint8)  # replaced at the first image
        for index, (_, name, read) in enumerate(files):
            with _malformed(f"cannot decode image {name}"), Image.open(io.BytesIO(read())) as image:
                shape = _declared_shape(name, image)
                if index == 0:
                    _check_split_size(f"the {len(files)} images of {source} (of {shape})", len(files),
                                      math.prod(shape))
                    images = np.empty((len(files), *shape), np.uint8)
                elif shape != images.shape[1:]:
                    raise DatasetError(f"images under {source} differ in size: {name} is {shape}, "
                                       f"{files[0][1]} {images.shape[1:]}")
                images[index] = _pixels(image)
    classes = tuple(sorted({label for label, *_ in files}))
    label_of = {name: i for i, name in enumerate(classes)}
    labels = np.array([label_of[label] for label, *_ in files], dtype=np.int64)
    return ImageArrays(images, labels, classes)


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

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool | None = None, order: torch.Tensor | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches; augmented when the dataset was built with augment=True (or `augment`
        says so). `order`: the sample indices to batch (e.g. one process's shard), instead of all of them.
        `shard` = (rank, world size) of such a shard (``order[rank::world_size]`` of one order): the
        augmentation is drawn for the whole global batch and this process keeps its share, so every
        sample is augmented exactly as in a single process with the same generator."""
        import torch

        if order is None:
            order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        augment = self.augment if augment is None else augment
        for first in range(0, len(order), batch_size):
            index = order[first:first + batch_size]
            images = self.images[index]
            if augment:
                images = _augment(images, self.pad, generator, shard)
            yield images, self.labels[index]


def trained_with_flips(channels: int) -> bool:
    """Whether training shows the network mirrored images: colour ones (a mirrored digit is another digit)."""
    return channels == 3


def _augment(images: torch.Tensor, pad: int, generator: torch.Generator | None,
             shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Random crops of the zero-padded batch (one offset per image) and, for colour, random flips.
    With `shard` = (rank, world size) the draws are made for the global batch of world size x n images,
    of which this batch holds every world-size-th from `rank` on."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    rank, world = shard
    device = images.device
    if device.type != "cpu":
        generator = None  # a CPU generator cannot draw on the GPU: use the device's (seeded by manual_seed)
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n * world,), generator=generator, device=device)[rank::world]
    dx = torch.randint(0, 2 * pad + 1, (n * world,), generator=generator, device=device)[rank::world]
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
    index_n = torch.arange(n, device=device)[:, None, None, None]
    out = padded[index_n, torch.arange(c, device=device)[None, :, None, None], rows, cols]
    if trained_with_flips(c):
        flip = torch.rand(n * world, generator=generator, device=device)[rank::world] < 0.5
        out[flip] = out[flip].flip(3)
    return out


def timing_arrays(arrays: ImageArrays, count: int = 200) -> ImageArrays:
    """The real inputs blocks are timed with: `count` images of `arrays` drawn at random (seed 0, so
    across classes). Block times depend on the data."""
    return arrays.subset(np.random.default_rng(0).permutation(len(arrays))[:count])


def timing_images(name: str, arrays: ImageArrays, count: int = 200) -> torch.Tensor:
    """The inputs `einet profile` times blocks with (:func:`timing_arrays`), normalised as for `name`."""
    return dataset_for(name, timing_arrays(arrays, count), train=False).images


def dataset_for(name: str, arrays: ImageArrays, train: bool) -> ImageDataset:
    """An ImageDataset with the standard normalisation of `name` (computed from the data if unknown)."""
    mean, std = NORMALISATION.get(name, (None, None))
    return ImageDataset(arrays, mean, std, augment=train)


# ---------------------------------------------------------------- any data source

def shard_indices(size: int, shuffle: bool = False, generator: torch.Generator | None = None, rank: int = 0,
                  world_size: int = 1, pad: bool = True) -> torch.Tensor:
    """The sample indices process `rank` of `world_size` takes, as torch's DistributedSampler picks them:
    one order for all (``randperm`` from `generator`, which must be seeded alike in every process),
    padded by wrapping around to a multiple of `world_size` when `pad` (every process then runs the
    same number of steps), and every `world_size`-th index from `rank` on."""
    import torch

    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    if world_size == 1:
        return order
    if pad and size % world_size:
        extra = world_size - size % world_size
        order = torch.cat([order, order.repeat(-(-extra // max(size, 1)))[:extra]])
    return order[rank::world_size]


def _is_loader(source: object) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(source, DataLoader)


def loader_is_sharded(loader: object) -> bool:
    """Whether a DataLoader draws through a DistributedSampler (then each process sees its own shard)."""
    from torch.utils.data import DistributedSampler

    samplers = [getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    return any(isinstance(s, DistributedSampler) for s in samplers)


def _checked_batch(batch: object, where: str, sample: Callable[[int], str], num_classes: int | None,
                   expected_shape: ImageShape | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch as (images, int64 labels), checked so that bad data fails here, naming the sample
    (`sample(i)` names the batch's i-th), not as a wrong number or deep inside a convolution."""
    import torch

    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"{where} must yield (images, labels) batches, got a {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{where} yields images as {type(images).__name__}, not tensors: add a to-tensor transform")
    _check_images(images, where, sample, expected_shape)
    if not bool(torch.isfinite(images).all()):  # one cheap pass per batch; the culprit is looked for only now
        first = int((~torch.isfinite(images)).flatten(1).any(1).byte().argmax())
        raise ValueError(f"{sample(first)} of {where} has non-finite pixel values")
    labels = _class_labels(labels, where, sample, num_classes)
    if labels.numel() != images.shape[0]:
        raise ValueError(f"{where} yields a batch of {images.shape[0]} images with {labels.numel()} labels")
    return images, labels


def _check_images(images: torch.Tensor, where: str, sample: Callable[[int], str],
                  expected_shape: ImageShape | None) -> None:
    """Floating-point [B, C, H, W] (of `expected_shape` [C, H, W] if given; None: any size there)."""
    if not images.is_floating_point():
        raise TypeError(f"{where} yields images of dtype {images.dtype}: einet takes floating-point images "
                        f"(e.g. pixels / 255, normalised)")
    if images.dim() != 4:
        raise ValueError(f"{where} yields image batches of shape {tuple(images.shape)}, not "
                         f"[batch, channels, height, width]")
    if expected_shape is not None and not all(want is None or want == got
                                              for want, got in zip(expected_shape, images.shape[1:])):
        raise ValueError(f"{sample(0)} of {where} is an image of shape {tuple(images.shape[1:])}, but "
                         f"{tuple(expected_shape)} (channels, height, width) is expected")


def _class_labels(labels: object, where: str, sample: Callable[[int], str],
                  num_classes: int | None) -> torch.Tensor:
    """Labels as int64 class indices: integers (not floats, which would be truncated, nor booleans), >= 0 and
    below `num_classes` if given; else a ValueError naming the first bad one's sample."""
    import torch

    try:
        labels = torch.as_tensor(labels).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{where} yields labels that are not numbers ({type(labels).__name__}): {error}") from None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        fractional = ~torch.isfinite(labels) | (labels != labels.round()) if labels.is_floating_point() else labels
        first = int(fractional.bool().byte().argmax())  # the first that is not a whole number, else the first
        raise ValueError(f"label {labels[first].item()} of {sample(first)} of {where} is not an integer class "
                         f"index (the labels are {labels.dtype})")
    outside = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        first = int(outside.byte().argmax())
        allowed = "negative" if num_classes is None else f"outside [0, {num_classes})"
        raise ValueError(f"label {labels[first].item()} of {sample(first)} of {where} is {allowed}")
    return labels.long()


def count_batches(source: object, batch_size: int, world_size: int = 1) -> int:
    """How many batches :func:`as_batches` yields per epoch in each process (a DataLoader: its length)."""
    if _is_loader(source):
        return len(source)  # type: ignore[arg-type]
    per_rank = -(-len(source) // world_size) if world_size > 1 else len(source)  # type: ignore[arg-type]
    return -(-per_rank // batch_size)


def as_batches(source: object, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
               *, augment: bool | None = None, rank: int = 0, world_size: int = 1, pad: bool = True,
               epoch: int | None = None, num_workers: int = 0, num_classes: int | None = None,
               expected_shape: ImageShape | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, int64 labels) batches from any source einet trains, evaluates or profiles on.

    - :class:`ImageDataset`: the fast in-memory path (its own batching and augmentation;
      `augment` overrides its flag, e.g. False for evaluation).
    - any map-style torch ``Dataset`` (``len`` and ``dataset[i] -> (image tensor, label)``): einet
      draws the order (shuffled with `generator`), fetches the items and collates them with torch's
      ``default_collate`` (through a DataLoader with `num_workers` workers). Its own transforms apply
      as they are: `augment` cannot switch them off, so evaluate on a dataset without random ones.
    - a ``DataLoader``: its batches as they come (its batch size, order, sampler and workers: the
      other arguments are ignored); if its sampler has ``set_epoch`` it is called with `epoch`.

    With ``world_size > 1`` the two dataset kinds are sharded like torch's DistributedSampler
    (:func:`shard_indices`): the same `generator` state in every process gives one order, and
    process `rank` takes its share (padded to equal shares when `pad`).

    Batches of a Dataset or DataLoader are checked as they come: images must be
    floating-point ``[B, C, H, W]`` tensors of finite values, labels integer class
    indices >= 0 (a float, NaN or boolean label is refused, not truncated). With
    `num_classes`, labels must also be below it; with `expected_shape` (channels,
    height, width), every image must have that shape. A bad batch raises a
    ValueError or TypeError naming the sample (its index in a Dataset, its place in
    the batch for a DataLoader). An ImageDataset is checked against `num_classes`
    and `expected_shape` once, up front.
    """
    if _is_loader(source):
        if epoch is not None:
            for sampler in (getattr(source, "sampler", None), getattr(getattr(source, "batch_sampler", None),
                                                                       "sampler", None)):
                if sampler is not None and hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
        return _loader_batches(source, num_classes, expected_shape)  # type: ignore[arg-type]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(source, ImageDataset):
        _check_images(source.images, "the ImageDataset", _dataset_sample, expected_shape)
        _class_labels(source.labels, "the ImageDataset", _dataset_sample, num_classes)
        if world_size == 1:  # exactly the draws einet has always made
            return source.batches(batch_size, shuffle, generator, augment=augment)
        order = shard_indices(len(source), shuffle, generator, rank, world_size, pad)
        return source.batches(batch_size, generator=generator, augment=augment, order=order,
                              shard=(rank, world_size))
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise TypeError(f"cannot draw batches from a {type(source).__name__}: expected an einet ImageDataset, a "
                        f"map-style torch Dataset (len and [i] -> (image tensor, label)) or a DataLoader")
    return _dataset_batches(source, batch_size, shard_indices(len(source), shuffle, generator, rank,
                                                              world_size, pad), num_workers, num_classes,
                            expected_shape)


def _dataset_sample(index: int) -> str:
    return f"sample {index}"


def _chunk_sample(chunk: list[int], position: int) -> str:
    return _dataset_sample(chunk[position])


def _loader_item(number: int, position: int) -> str:
    """A DataLoader's sample by its place: which dataset index it is, only its sampler knows."""
    return f"item {position} of batch {number}"


def _loader_batches(loader: Iterable[object], num_classes: int | None,
                    expected_shape: ImageShape | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for number, batch in enumerate(loader):
        yield _checked_batch(batch, "the DataLoader", partial(_loader_item, number), num_classes, expected_shape)


def _dataset_batches(dataset: object, batch_size: int, order: torch.Tensor, num_workers: int,
                     num_classes: int | None,
                     expected_shape: ImageShape | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torch.utils.data import DataLoader

    index = order.tolist()
    chunks = [index[first:first + batch_size] for first in range(0, len(index), batch_size)]
    # any map-style object (len and [i]) will do; torch's stub asks for a Dataset
    loader: DataLoader[object] = DataLoader(dataset, batch_sampler=chunks,  # type: ignore[arg-type]
                                            num_workers=num_workers)
    where = f"the {type(dataset).__name__}"
    for chunk, batch in zip(chunks, loader):  # a DataLoader yields its batches in its sampler's order
        yield _checked_batch(batch, where, partial(_chunk_sample, chunk), num_classes, expected_shape)
