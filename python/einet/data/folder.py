"""Class-folder image layouts (``[prefix/]split/<class>/<image>``), from a directory or a zip of one,
decoded once with Pillow and kept in an authenticated cache (:func:`cache_dir`)."""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import math
import os
import secrets
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from functools import partial
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EinetValueError
from ..validation import open_regular
from . import limits
from .arrays import _CHUNK, DatasetError, ImageArrays, _check_size, _check_split_size, _malformed

if TYPE_CHECKING:
    from PIL import Image

# The Pillow format each suffix names: the only decoder a file is given (any other plugin, EPS's Ghostscript
# among them, never sees the bytes of an image folder)
_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
IMAGE_SUFFIXES = tuple(_FORMATS)
_GREY = ("1", "L", "LA", "La", "F")  # and 16/32-bit grey (I, I;16...); a palette of greys too (see _channels)
_CACHE_FORMAT = 4  # bump when the cached content or the fingerprint changes (4: grey with alpha or palette kept grey)
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
        key = cache_secret(directory)
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


def cache_secret(directory: Path) -> bytes:
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
            # one split (up to MAX_DATASET_BYTES) and its class names: anything larger is not einet's
            if size > 2 * limits.MAX_DATASET_BYTES:
                raise EinetValueError(f"{size} bytes")
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


def _channels(image: Image.Image) -> int:
    """How many channels :func:`_pixels` makes of an image: grey ones keep one (without their alpha, and
    a palette image whose colours are all grey too), every other one becomes RGB (CMYK included)."""
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or [0]
        return 1 if palette[0::3] == palette[1::3] == palette[2::3] else 3
    return 1 if image.mode in _GREY or image.mode.startswith("I") else 3


def _pixels(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, C]: grey stays one channel, 16-bit grey keeps its high byte, everything else becomes RGB.

    Pillow's own conversion of 16-bit grey to 8 bits clips at 255, which turns
    most of a 16-bit image white; the high byte is the proper scaling (and what
    Pillow keeps of 16-bit colour images).
    """
    if image.mode.startswith("I"):  # I;16, I;16B... (16-bit grey PNG), or I (32-bit)
        array = np.asarray(image)
        if array.size and (array.min() < 0 or array.max() > 0xFFFF):
            raise EinetValueError(f"{image.mode} pixel values outside 16 bits")
        return (array.astype(np.uint16) >> 8).astype(np.uint8)[..., None]
    array = np.asarray(image.convert("L" if _channels(image) == 1 else "RGB"))
    return array if array.ndim == 3 else array[..., None]


def _declared_shape(name: str, image: Image.Image) -> tuple[int, int, int]:
    """The [H, W, C] an opened image will decode to, from its header (within MAX_IMAGE_PIXELS; a palette image
    is then decoded to read its palette)."""
    _check_size(name, image.width * image.height, "MAX_IMAGE_PIXELS", unit="pixels")
    return image.height, image.width, _channels(image)


def _open(name: str, content: bytes) -> Image.Image:
    """The image in `content`, decoded only as the format its suffix names (a mismatch is refused)."""
    from PIL import Image, UnidentifiedImageError

    expected = _FORMATS[os.path.splitext(name)[1].lower()]
    try:
        return Image.open(io.BytesIO(content), formats=[expected])
    except UnidentifiedImageError:
        raise DatasetError(f"cannot decode image {name}: it is not a {expected} image, as its suffix says") from None


def _mismatch(source: Path, name: str, shape: tuple[int, ...], first: str, first_shape: tuple[int, ...]) -> str:
    """Why an image cannot join the first one's array: another channel count, or another size."""
    if shape[2] != first_shape[2]:
        return (f"images under {source} mix channel counts: {name} has {shape[2]}, {first} {first_shape[2]} "
                f"(grey is 1, colour 3): make them all grey or all colour")
    return f"images under {source} differ in size: {name} is {shape}, {first} {first_shape}"


def _decode_folder(source: Path, split: str | None) -> ImageArrays:
    """Decode the split's images into one array, allocated from the first image's header once the split's size
    (count x that shape) is known to be within MAX_DATASET_BYTES: every image must have that shape."""
    with ExitStack() as stack:
        files = [(parts[-2], name, read) for parts, name, read in _image_files(source, stack)
                 if _in_split(parts, split)]
        if not files:
            where = f"'{split}/<class>/<image>'" if split else "'<class>/<image>'"
            raise DatasetError(f"no images in the layout {where} under {source}")
        images = np.empty((0, 0, 0, 0), np.uint8)  # replaced at the first image
        for index, (_, name, read) in enumerate(files):
            with _malformed(f"cannot decode image {name}"), _open(name, read()) as image:
                shape = _declared_shape(name, image)
                if index == 0:
                    _check_split_size(f"the {len(files)} images of {source} (of {shape})", len(files),
                                      math.prod(shape))
                    images = np.empty((len(files), *shape), np.uint8)
                elif shape != images.shape[1:]:
                    raise DatasetError(_mismatch(source, name, shape, files[0][1], images.shape[1:]))
                images[index] = _pixels(image)
    classes = tuple(sorted({label for label, *_ in files}))
    label_of = {name: i for i, name in enumerate(classes)}
    labels = np.array([label_of[label] for label, *_ in files], dtype=np.int64)
    return ImageArrays(images, labels, classes)
