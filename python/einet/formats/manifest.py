"""A deployment bundle's files and manifest: written, verified, packed (what ``einet.bundle`` reads).

The manifest (``manifest.json``, format ``einet-bundle`` version 1) carries a SHA-256 of itself and
of every file it lists, and every field is checked before anything is built (its schema and the typed :class:`Manifest`:
:mod:`einet.formats.manifest_schema`; docs/design.md, section 12). Numpy only: no torch here.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import process_umask
from ..errors import EinetValueError
from ..validation import open_regular, parse_json
from ..variants import Variant
from .deployment import Deployment, deployment_record
from .manifest_schema import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    DEVICE_FILE,
    HOLDOUT,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    NETWORK,
    TEST,
    TIMING,
    BundleError,
    Manifest,
    checked_manifest,
    device_key,
    file_sha256,
    manifest_digest,
)
from .npz import write_arrays
from .packed import read_packed
from .packed import unpack as unpack  # (callers find it here too)
from .predictor_file import ExportablePredictor, write_predictor
from .profiles import CSProfile, ETRecord
from .split import HeldOutSplit

__all__ = ["HOLDOUT", "MANIFEST", "NETWORK", "TEST", "TIMING", "BundleError", "Manifest", "add_device", "device_key",
           "file_sha256", "is_bundle_folder", "pack", "read_manifest", "unpack", "verify_folder", "write_bundle"]

def is_bundle_folder(path: Path) -> bool:
    """Whether `path` is a folder holding an einet bundle's manifest (what a build may replace)."""
    try:
        with open_regular(path / MANIFEST) as f:
            record = parse_json(f.read(MAX_MANIFEST_BYTES))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == BUNDLE_FORMAT


def write_bundle(path: str | os.PathLike[str], *, name: str, checkpoint: str | os.PathLike[str], variant: Variant,
                 num_exits: int, input_spec: Mapping[str, Any], split: HeldOutSplit, holdout: CSProfile,
                 test: CSProfile | None, test_data: str | None, timing_images: np.ndarray,
                 exit_times: Mapping[str, Any], runtime: Mapping[str, Any], select_options: Mapping[str, Any],
                 devices: Sequence[tuple[Mapping[str, Any], ETRecord, Deployment, ExportablePredictor | None]],
                 provenance: Mapping[str, Any], log: Callable[[str], None] = print) -> Path:
    """Write a bundle folder at `path`: files, then the manifest, into a staging folder swapped into place
    (the path holds the old bundle or the new one, never half of one or none). A bundle replaced keeps the
    files and other devices' entries this call did not make, the entries while the network is the same
    (`log` names those dropped). `devices`: per device, (identity, ET-profile, deployment, predictor)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _tidy(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    try:
        staging.chmod(0o777 & ~process_umask())  # a folder like any other, not mkdtemp's private one
        shutil.copyfile(checkpoint, staging / NETWORK)
        holdout.save(staging / HOLDOUT)
        if test is not None:
            test.save(staging / TEST)
        write_arrays(staging / TIMING, "timing-images", {"images": np.ascontiguousarray(timing_images, np.uint8)})
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "name": name,
            "network": {"file": NETWORK, "variant": variant.as_dict(), "num_exits": num_exits},
            "input": dict(input_spec), "split": split.as_dict(), "holdout": HOLDOUT,
            "test": TEST if test is not None else None, "test_data": test_data if test is not None else None,
            "timing_images": TIMING, "exit_times": dict(exit_times), "runtime": dict(runtime),
            "select": dict(select_options), "devices": [], "provenance": dict(provenance)}
        for identity, et, deployment, predictor in devices:
            _add_device(staging, manifest, identity, et, deployment, predictor)
        if os.path.lexists(path):
            if not is_bundle_folder(path):
                raise BundleError(f"{path} exists and is not an einet bundle: refusing to replace it")
            _keep(path, staging, manifest, log)
        _write_manifest(staging, manifest)
        read_manifest(staging)  # what cannot be read back is never published
        _publish(staging, path)
    except BaseException:
        _remove(staging)
        raise
    return path


def _keep(old: Path, staging: Path, manifest: dict[str, Any], log: Callable[[str], None]) -> None:
    """Copy into the new bundle in `staging` what the bundle `old` has that this build did not make: files
    its manifest does not list, and other devices' entries (`einet profile BUNDLE`) while the network is
    the same (network.pt and variant); entries that time another network are dropped, logged."""
    try:
        previous = read_manifest(old)[1].record
    except BundleError as error:
        log(f"{old} is replaced whole, nothing of it kept: {error}")
        return
    same = previous["network"] == manifest["network"] and previous["files"][NETWORK] == file_sha256(staging / NETWORK)
    others = [entry for entry in previous["devices"] if entry["key"] not in {e["key"] for e in manifest["devices"]}]
    if others and not same:
        log(f"{old}: dropped the entries of {'; '.join(entry['key'] for entry in others)}, timed for the network "
            f"this build replaces (einet profile {old} --device ... times the new one)")
    for entry in others if same else []:
        index, deployment = _next_index(manifest), dict(entry["deployment"])
        shutil.copyfile(old / entry["et"], staging / f"et-{index}.npz")
        if deployment.get("predictor"):
            shutil.copyfile(old / deployment["predictor"], staging / f"predictor-{index}.npz")
            deployment["predictor"] = f"predictor-{index}.npz"
        manifest["devices"].append(entry | {"et": f"et-{index}.npz", "deployment": deployment})
    for item in sorted(set(os.listdir(old)) - {MANIFEST, *previous["files"]}):
        if os.path.lexists(staging / item):
            log(f"{old / item} is not kept: the new bundle has a file of that name")
        elif (old / item).is_dir() and not (old / item).is_symlink():
            shutil.copytree(old / item, staging / item, symlinks=True)
        else:
            shutil.copy2(old / item, staging / item, follow_symlinks=False)


def _publish(staging: Path, path: Path) -> None:
    """Put the folder `staging` at `path`, removing what was there: in one atomic exchange where the system
    has one (Linux, most file systems), else by two renames, a crash between which leaves the old bundle
    at .NAME.old for :func:`_tidy` to put back."""
    import ctypes

    try:
        swap = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not Linux, or an older C library
        swap = None
    if swap is not None and os.path.lexists(path):
        if swap(-100, os.fsencode(staging), -100, os.fsencode(path), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
            _remove(staging)
            return
        if (error := ctypes.get_errno()) not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(error, os.strerror(error), str(path))
    old = path.with_name(f".{path.name}.old")
    if os.path.lexists(path):
        os.rename(path, old)
    os.rename(staging, path)
    _remove(old)


def _tidy(path: Path) -> None:
    """Undo a killed :func:`write_bundle` of `path`: its old bundle put back if none took its place, staging gone."""
    old = path.with_name(f".{path.name}.old")
    if os.path.lexists(old) and not os.path.lexists(path):
        os.rename(old, path)
    for item in [old, *(p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.staging-"))]:
        _remove(item)


def _remove(path: Path) -> None:
    """Remove a folder, or a link (what an exchange with a linked bundle leaves), if there."""
    path.unlink() if path.is_symlink() else shutil.rmtree(path, ignore_errors=True)


def add_device(path: str | os.PathLike[str], identity: Mapping[str, Any], et: ETRecord, deployment: Deployment,
               predictor: ExportablePredictor | None) -> Path:
    """Add (or replace) one device's ET-profile and configuration in a bundle folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise BundleError(f"{path} is a packed bundle: unpack it (einet.formats.manifest.unpack) to add a device")
    manifest = json.loads(json.dumps(read_manifest(folder)[1].record))
    listed = list(manifest["files"])
    _add_device(folder, manifest, identity, et, deployment, predictor)
    _write_manifest(folder, manifest, listed)
    return folder


def _add_device(folder: Path, manifest: dict[str, Any], identity: Mapping[str, Any], et: ETRecord,
                deployment: Deployment, predictor: ExportablePredictor | None) -> None:
    from dataclasses import replace

    key = device_key(identity)
    devices = [entry for entry in manifest["devices"] if entry["key"] != key]
    index = _next_index(manifest)
    et_file = f"et-{index}.npz"
    et.save(folder / et_file)
    if deployment.spec.uses_predictor:
        if predictor is None:
            raise EinetValueError(f"the deployed {deployment.policy!r} needs its predictor")
        predictor_file = f"predictor-{index}.npz"
        deployment = replace(deployment, predictor=predictor_file)
        write_predictor(folder / predictor_file, predictor)
    else:
        deployment = replace(deployment, predictor=None)
    devices.append({"key": key, "device": dict(identity), "et": et_file,
                    "deployment": deployment_record(deployment)})
    manifest["devices"] = devices


def _next_index(manifest: Mapping[str, Any]) -> int:
    """The number of a new device's files (et-N.npz, predictor-N.npz): past every listed one."""
    return 1 + max([_device_index(entry["et"]) for entry in manifest["devices"]] or [-1])


def _device_index(et_file: str) -> int:
    """N of a device's et-N.npz (checked on reading: :func:`checked_manifest`)."""
    match = DEVICE_FILE.fullmatch(et_file)
    assert match is not None
    return int(match.group(1))


def _write_manifest(folder: Path, manifest: dict[str, Any], listed: Sequence[str] = ()) -> None:
    """Write the manifest with every file's checksum; then remove the files of `listed` (the previous
    manifest's) it no longer lists (a replaced device's). Nothing else in the folder is touched."""
    from .._atomic import atomic_write

    referenced = {NETWORK, HOLDOUT, TIMING, *([TEST] if manifest["test"] else [])}
    for entry in manifest["devices"]:
        referenced |= {entry["et"], *([entry["deployment"]["predictor"]] if entry["deployment"]["predictor"] else [])}
    manifest["files"] = {name: file_sha256(folder / name) for name in sorted(referenced)}
    manifest["sha256"] = manifest_digest(manifest)
    with atomic_write(folder / MANIFEST) as f:
        f.write(json.dumps(manifest, indent=1).encode() + b"\n")
    for stale in set(listed) - referenced:
        (folder / stale).unlink(missing_ok=True)


def read_manifest(path: str | os.PathLike[str]) -> tuple[Path, Manifest]:
    """A bundle folder (or a packed file's cached copy, see :mod:`einet.formats.packed`) and its manifest,
    verified: the manifest's checksum and schema, every file's SHA-256. Anything wrong is a BundleError
    naming the bundle (the packed file, not its copy) and the problem; nothing is built or imported."""
    path = Path(path)
    return read_packed(path) if path.is_file() else (path, verify_folder(path))


def verify_folder(folder: Path, shown: Path | None = None) -> Manifest:
    """The verified manifest of the bundle folder `folder`; errors name `shown` (default: the folder)."""
    shown = shown or folder
    try:
        with open_regular(folder / MANIFEST) as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            raise BundleError(f"its manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        manifest = parse_json(text)
        del text  # up to 16 MiB, not kept while the manifest is checked
        return checked_manifest(manifest, folder)
    except FileNotFoundError:
        raise BundleError(f"{shown} is not an einet bundle: no {MANIFEST} in it") from None
    except (ValueError, TypeError) as error:
        raise BundleError(f"{shown} is not a readable einet bundle: {error}") from None


def pack(folder: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Zip a bundle folder into one file (stored, fixed timestamps: the same bundle, the same bytes)."""
    from .._atomic import atomic_write
    from ..validation import check_outputs

    checked, manifest = read_manifest(folder)
    if not Path(folder).is_dir():
        raise BundleError(f"{folder} is packed already: pack a bundle folder")
    check_outputs({"the packed bundle": path}, {"the bundle folder": checked})
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        for name in [MANIFEST, *manifest.files]:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with open_regular(checked / name) as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)
    return Path(path)
