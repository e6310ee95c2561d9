"""Packed bundles: one ``.einet`` zip, as :func:`einet.formats.manifest.pack` writes it, read through a cache.

A packed bundle is unpacked once, into ``bundles/<SHA-256 of the packed file>`` in the user's cache
directory (:func:`einet.data.cache_dir`), and every later read of it, in this process or another,
reuses that copy: nothing is left behind per load, and a killed process leaves at most a staging
folder (a copy appears under its name only once complete). The copy is used only while its manifest
is byte for byte the packed one's, and it is verified like any bundle folder on every read (every
file's SHA-256); a copy that fails is unpacked again, so that errors are the packed file's, naming it.
Copies stay in the cache (one per packed file einet has read): delete ``bundles/`` to reclaim the space.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from ..validation import open_regular, parse_json
from .manifest_schema import MANIFEST, MAX_MANIFEST_BYTES, BundleError, Manifest

MAX_BUNDLE_BYTES = 4 * 1024**3  # a packed bundle, unpacked
MAX_MEMBERS = 1024
# what a damaged or foreign zip raises while it is read: each is a BundleError here
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, OSError,
               ValueError, zlib.error)


def read_packed(path: Path) -> tuple[Path, Manifest]:
    """A packed bundle's cached copy and its manifest, verified; errors name `path`, not the copy."""
    try:
        return _verified_copy(path)
    except BundleError:  # damaged in the cache (then a fresh copy verifies), or packed so
        return _verified_copy(path)


def _verified_copy(path: Path) -> tuple[Path, Manifest]:
    """The cached copy (made if missing) and its verified manifest; a copy that fails is removed."""
    from .manifest import verify_folder

    folder = unpack(path)
    try:
        return folder, verify_folder(folder, path)
    except BundleError:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def unpack(path: str | os.PathLike[str], into: str | os.PathLike[str] | None = None) -> Path:
    """A packed bundle's files in the folder `into` (default: its cached copy, made if missing). Its manifest is
    read first and only the files it lists are written; every member must be stored as
    :func:`einet.formats.manifest.pack` stores it (no compression, no encryption, a plain name), sizes
    bounded before anything is written."""
    try:
        with open_regular(path) as handle:
            digest = None if into is not None else hashlib.file_digest(handle, "sha256").hexdigest()
            with zipfile.ZipFile(handle) as archive:
                return _unpack(path, archive, into, digest)
    except BundleError:
        raise
    except (*_ZIP_ERRORS, TypeError, AttributeError) as error:
        raise BundleError(f"{path} is neither a bundle folder nor a readable packed bundle: "
                          f"{type(error).__name__}: {error}") from None


def _unpack(path: str | os.PathLike[str], archive: zipfile.ZipFile, into: str | os.PathLike[str] | None,
            digest: str | None) -> Path:
    """:func:`unpack` of the open `archive`; `digest`: the packed file's SHA-256, when unpacked into the cache."""
    members = _members(path, archive)
    manifest = archive.read(members[MANIFEST])
    if digest is not None:
        folder = _cached(path, digest)
        if _holds(folder, manifest):
            return folder
    listed = parse_json(manifest).get("files", {})
    wanted = [members[name] for name in [MANIFEST, *listed] if name in members] if isinstance(listed, dict) else []
    if into is not None:
        folder = Path(into)
        folder.mkdir(parents=True, exist_ok=True)
        _extract(archive, wanted, folder)
        return folder
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _extract(archive, wanted, staging)
        try:
            os.rename(staging, folder)
        except OSError:  # a copy is there: another process's (keep it), or an edited one (replace it)
            if not _holds(folder, manifest):
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _members(path: str | os.PathLike[str], archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by name, if they are what pack writes: plain stored files, bounded, a manifest."""
    members = {m.filename: m for m in archive.infolist()}
    if len(members) != len(archive.infolist()) or len(members) > MAX_MEMBERS:
        raise BundleError(f"{path} holds duplicate members or more than {MAX_MEMBERS}")
    if sum(m.file_size for m in members.values()) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path} would unpack to more than {MAX_BUNDLE_BYTES} bytes")
    for name, member in members.items():
        if Path(name).name != name or name in (".", "..") or member.is_dir() or member.flag_bits & 0x1 \
                or member.compress_type != zipfile.ZIP_STORED or member.compress_size != member.file_size:
            raise BundleError(f"{path}: member {name!r} is not a plain stored file, as einet packs them")
    if MANIFEST not in members or members[MANIFEST].file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} has no {MANIFEST} of at most {MAX_MANIFEST_BYTES} bytes")
    return members


def _cached(path: str | os.PathLike[str], digest: str) -> Path:
    """Where the packed file with this SHA-256 is unpacked: in the user's cache directory, private to the user."""
    from ..data.folder import cache_dir
    directory = cache_dir() / "bundles"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise BundleError(f"cannot unpack {path} into {directory} ({error.strerror}): set EINET_CACHE_DIR to a "
                          f"folder you can write to") from None
    return directory / digest


def _holds(folder: Path, manifest: bytes) -> bool:
    """Whether the cached copy `folder` is there with this manifest (copies appear complete, renamed into
    place; its files are verified against the manifest on every read)."""
    try:
        with open_regular(folder / MANIFEST, follow_symlinks=False) as f:
            return f.read(len(manifest) + 1) == manifest
    except OSError:
        return False


def _extract(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], folder: Path) -> None:
    """Write the members into `folder` (read_manifest then verifies each file's checksum, and finds a missing one)."""
    for member in members:
        with archive.open(member) as source, open(folder / member.filename, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
