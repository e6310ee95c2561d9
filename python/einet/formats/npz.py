"""The one file container of profiles, predictors and a bundle's arrays: a checked ``.npz``.

Named arrays plus a JSON header (format version, kind, metadata, the list of arrays and a SHA-256
of all of it), read with ``allow_pickle=False`` after the zip directory and every array's header
have been checked against bounds (nothing is decompressed or allocated beyond them); written
atomically, so an interrupted write never leaves a half file. Numpy only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .._atomic import atomic_write
from ..errors import EinetValueError
from ..validation import open_regular

# 2: CS-profiles may carry log-probabilities. 3: the header lists every array and holds a SHA-256
# of the arrays and the metadata, verified on load; class indices are int32. Versions 1 and 2 (no
# checksum) were never released and are refused.
FORMAT_VERSION = 3
READABLE_VERSIONS = (3,)


class ProfileFormatError(EinetValueError):
    """A profile or predictor file is unreadable, of another version or kind, or fails its schema."""


# What read_arrays accepts, checked from the zip directory and every array's .npy header before
# anything is decompressed or allocated: at most MAX_ARCHIVE_BYTES of arrays in all (the sum of the
# members' uncompressed sizes; real files are far smaller: a CS-profile of 50,000 samples x 40 exits
# with 100 log-probabilities each is about 0.8 GB), at most MAX_ARCHIVE_MEMBERS arrays, a JSON header
# of at most MAX_HEADER_BYTES, and arrays of booleans or numbers only.
MAX_ARCHIVE_BYTES = 2 * 1024**3
MAX_ARCHIVE_MEMBERS = 4096
MAX_HEADER_BYTES = 4 * 1024**2
_ARRAY_KINDS = "biufc"  # bool, int, uint, float, complex: no objects, strings, records or void


def _content_digest(kind: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """SHA-256 over the kind, the metadata and every array (name, dtype, shape, bytes) in name order:
    a file whose content changed in any way no longer matches."""
    digest = hashlib.sha256(json.dumps([kind, meta], sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"|{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_arrays(path: str | os.PathLike[str], kind: str, arrays: Mapping[str, np.ndarray],
                 meta: Mapping[str, Any] | None = None) -> Path:
    """Atomically and durably write named arrays and a JSON header to `path` (.npz).

    The header lists the arrays and holds a SHA-256 of the content (:func:`_content_digest`).
    Goes through :func:`einet._atomic.atomic_write`: readers and concurrent writers of the same
    path see the previous file or a complete new one, never a half-written one.
    """
    path = Path(path)
    meta = json.loads(json.dumps(dict(meta or {})))  # as it will read back (tuples become lists)
    header = json.dumps({"format": "einet", "version": FORMAT_VERSION, "kind": kind, "meta": meta,
                         "arrays": sorted(arrays), "sha256": _content_digest(kind, arrays, meta)})
    with atomic_write(path) as f:
        np.savez_compressed(f, __header__=np.frombuffer(header.encode(), dtype=np.uint8), **arrays)  # type: ignore[arg-type]
    return path


def _check_directory(file: BinaryIO, members: int) -> None:
    """The zip's end record must declare exactly the entries read, in a directory that ends where
    the record starts: a damaged record would otherwise let zipfile read a shorter list and an array
    vanish without an error (numpy writes no comment and no prepended data)."""
    end = file.seek(0, os.SEEK_END)
    if end < 22:
        raise ProfileFormatError("is too short to be a zip archive")
    file.seek(end - 22)
    record = file.read(22)
    if record[:4] != b"PK\x05\x06":
        raise ProfileFormatError("has no zip end record where numpy writes it")
    _, _, _, on_disk, total, size, offset, comment = struct.unpack("<4s4H2LH", record)
    if not (on_disk == total == members and comment == 0 and offset + size == end - 22):
        raise ProfileFormatError(f"has a damaged zip directory ({total} entries declared, {members} read)")


def _read_npz(file: BinaryIO, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive. Sizes are checked before reading: the members' declared sizes
    against `max_bytes`, and each .npy header's shape and dtype against its member's size (the zip
    reader never returns more than the declared size, so no header can force a larger allocation)."""
    with zipfile.ZipFile(file) as archive:
        members = archive.infolist()
        if len(members) <= 0xFFFF:  # beyond, zip64 records the count elsewhere (and the cap below refuses)
            _check_directory(file, len(members))
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise ProfileFormatError(f"holds {len(members)} arrays, more than the {MAX_ARCHIVE_MEMBERS} allowed")
        total = sum(member.file_size for member in members)
        if total > max_bytes:
            raise ProfileFormatError(f"expands to {total} bytes, more than the {max_bytes} allowed")
        arrays: dict[str, np.ndarray] = {}
        for member in members:
            name = member.filename[:-4]
            if not member.filename.endswith(".npy") or name in arrays:
                raise ProfileFormatError(f"holds {member.filename!r}, which is not an array (or a repeated one)")
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ProfileFormatError(f"array {name!r} is in .npy format {version}, not 1.0 or 2.0")
                if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.names is not None:
                    raise ProfileFormatError(f"array {name!r} has dtype {dtype}: only booleans and numbers are read")
                size = math.prod(shape) * dtype.itemsize
                if stream.tell() + size != member.file_size:
                    raise ProfileFormatError(f"array {name!r} declares shape {shape} {dtype} ({size} bytes) but holds "
                                             f"{member.file_size - stream.tell()} bytes")
            with archive.open(member) as stream:
                arrays[name] = np.lib.format.read_array(stream, allow_pickle=False)
    return arrays


def read_arrays(path: str | os.PathLike[str], kind: str,
                max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_arrays`, checking its format, version and kind.

    Anything wrong with the file is a :class:`ProfileFormatError` naming it, never another error:
    damaged zips and streams, a header that is not a JSON object, arrays of objects, and archives
    that would expand beyond `max_bytes` (default :data:`MAX_ARCHIVE_BYTES`, checked from the zip's
    member sizes and the arrays' headers before anything is decompressed or allocated).
    """
    path = Path(path)
    try:
        with open_regular(path) as f:  # our handle: closed on errors too
            arrays = _read_npz(f, MAX_ARCHIVE_BYTES if max_bytes is None else max_bytes)
    except FileNotFoundError:
        raise ProfileFormatError(f"missing file {path}") from None
    except OSError as error:  # not a regular file, unreadable
        raise ProfileFormatError(f"{path}: {error.strerror or error}") from None
    except ProfileFormatError as error:
        raise ProfileFormatError(f"{path} {error}") from None
    except Exception as error:  # a damaged archive raises many types: zlib.error, EOFError, NotImplementedError
        # (compression method), RuntimeError (encryption), MemoryError, struct.error, ...
        raise ProfileFormatError(f"{path} is not a readable einet file (truncated or corrupt?): "
                                 f"{type(error).__name__}: {error}") from None
    raw = arrays.pop("__header__", None)
    if raw is None:
        raise ProfileFormatError(f"{path} has no einet header")
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_HEADER_BYTES:
        raise ProfileFormatError(f"{path} has a corrupt header: {raw.dtype} array of shape {raw.shape}, expected "
                                 f"at most {MAX_HEADER_BYTES} bytes of JSON")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as error:
        raise ProfileFormatError(f"{path} has a corrupt header: {type(error).__name__}: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("meta", {}), dict):
        what = "header" if not isinstance(header, dict) else "header's meta"
        raise ProfileFormatError(f"{path} has a corrupt header: its {what} is not a JSON object")
    version = header.get("version")
    if header.get("format") != "einet" or type(version) is not int or version not in READABLE_VERSIONS:
        raise ProfileFormatError(f"{path} is format {header.get('format')!r} version {header.get('version')!r}; "
                                 f"this einet reads versions {READABLE_VERSIONS}")
    if header.get("kind") != kind:
        raise ProfileFormatError(f"{path} holds a {header.get('kind')!r}, not a {kind!r}")
    meta = header.get("meta", {})
    if header.get("arrays") != sorted(arrays):
        raise ProfileFormatError(f"{path} holds the arrays {sorted(arrays)}, not the {header.get('arrays')} "
                                 "its header lists (damaged?)")
    if header.get("sha256") != _content_digest(kind, arrays, meta):
        raise ProfileFormatError(f"{path} fails its SHA-256 checksum: the file is damaged or was edited")
    return arrays, meta


def only_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], allowed: Sequence[str]) -> None:
    """Refuse an array the format does not define: a damaged name would otherwise go unnoticed."""
    unexpected = sorted(set(arrays) - set(allowed))
    if unexpected:
        raise ProfileFormatError(f"{path}: unexpected array {unexpected[0]!r} in this kind of file")


def require_shapes(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
             shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Each named array must exist with the given shape; negative entries (BLOCKS, SAMPLES) name
    sizes that must agree across arrays."""
    sizes: dict[int, int] = {}
    for name, shape in shapes.items():
        if name not in arrays:
            raise ProfileFormatError(f"{path} misses the array {name!r}")
        actual = arrays[name].shape
        if len(actual) != len(shape):
            raise ProfileFormatError(f"{path}: {name} must be {len(shape)}-D, got shape {actual}")
        for want, got in zip(shape, actual):
            if (want >= 0 and want != got) or (want < 0 and sizes.setdefault(want, got) != got):
                raise ProfileFormatError(f"{path}: {name} has shape {actual}, inconsistent with the other arrays")
