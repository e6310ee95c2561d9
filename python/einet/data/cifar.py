"""CIFAR-10 and CIFAR-100 from their python-version batch files, read with an unpickler that only
admits plain numeric numpy arrays and plain containers."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np

from .arrays import DatasetError, ImageArrays, _check_size, _check_split, _check_split_size, _malformed

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
