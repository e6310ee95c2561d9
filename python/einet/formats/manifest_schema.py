"""A bundle's manifest, format ``einet-bundle`` version 1: its fields (one table), the typed
:class:`Manifest` it is read into, and the checks every field passes first (docs/design.md,
section 12). A field added, removed, renamed or narrowed here is a new version. Numpy only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..distributions import RELATIVE_KINDS
from ..errors import EinetTypeError, EinetValueError
from ..validation import number, open_regular, printable_name
from ..variants import Variant
from .adaptation import check_adaptation
from .deployment import Deployment, deployment_from_record
from .select_options import check_select_options
from .split import HeldOutSplit

BUNDLE_FORMAT = "einet-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
NETWORK = "network.pt"
HOLDOUT = "cs-holdout.npz"
TEST = "cs-test.npz"
TIMING = "timing-images.npz"
MAX_MANIFEST_BYTES = 16 * 1024**2
FIELDS = ("format", "version", "name", "network", "input", "split", "holdout", "test", "test_data", "timing_images",
          "exit_times", "runtime", "select", "devices", "provenance", "files", "sha256")  # version 1's
DEVICE_FIELDS = ("key", "device", "et", "deployment")
DEVICE_FILE = re.compile(r"et-(\d{1,6})\.npz")  # a device's ET-profile et-N.npz (its predictor predictor-N.npz)


class BundleError(EinetValueError):
    """A bundle that is damaged, edited, of another version, or that lacks what was asked of it."""


@dataclass(frozen=True)
class InputRecord:
    """The network's input: (C, H, W), per-channel normalisation, class names (in label order)."""

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class DeviceEntry:
    """One device a bundle was timed on: its identity, ET-profile file, and the configuration chosen for it."""

    key: str
    device: Mapping[str, Any]  # kind (cpu or cuda), name, threads (and the torch version)
    et: str  # file
    deployment: Deployment


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest, read and verified once (:func:`checked_manifest`)."""

    name: str
    variant: Variant
    num_exits: int
    input: InputRecord
    split: HeldOutSplit
    has_test: bool  # a test-split CS-profile (cs-test.npz)
    test_data: str | None  # the test split's fingerprint
    exit_kind: str  # the exit-time distribution's kind
    horizon_ms: float
    adapt: bool
    threads: int
    adaptation: Mapping[str, Any]  # checked against formats.adaptation.SETTINGS: keyword arguments of Adaptation
    select: Mapping[str, Any]  # the options a new device is selected with
    devices: tuple[DeviceEntry, ...]
    provenance: Mapping[str, Any]
    files: Mapping[str, str]  # file name -> SHA-256
    record: Mapping[str, Any] = field(repr=False, compare=False)  # the verified JSON: writers copy parts of it


def device_key(identity: Mapping[str, Any]) -> str:
    """How a bundle names a device's entry: "cpu: <model>, N threads" (see einet.bundle.device_identity)."""
    return f"{identity['kind']}: {identity['name']}, {identity['threads']} thread{'s' * (identity['threads'] != 1)}"


def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file, read a MiB at a time."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of a manifest without its own checksum, in a canonical JSON form."""
    content = {key: value for key, value in manifest.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def checked_manifest(record: object, folder: Path) -> Manifest:
    """The manifest of the bundle folder `folder`, every field checked (TypeError/ValueError name the
    field), every file's hash verified."""
    if not isinstance(record, dict):
        raise EinetTypeError("its manifest is not a JSON object")
    version = record.get("version")
    if record.get("format") != BUNDLE_FORMAT or type(version) is not int:
        raise EinetValueError("its manifest is not an einet bundle's")
    if version != BUNDLE_VERSION:
        raise EinetValueError(f"it is bundle version {version}; this einet reads version {BUNDLE_VERSION}")
    if record.get("sha256") != manifest_digest(record):
        raise EinetValueError("its manifest fails its SHA-256 checksum: it is damaged or was edited")
    if set(record) != set(FIELDS):
        raise EinetValueError(f"its manifest has the fields {sorted(record)}, expected {sorted(FIELDS)}")
    files = _checked_files(record["files"], folder)
    variant, num_exits = _checked_network(record["network"], files)
    spec = _checked_input(record["input"])
    if not printable_name(record["name"]):
        raise EinetValueError(f"name must be a printable string of at most 200 characters, got {record['name']!r:.80}")
    test_data = record["test_data"]
    if test_data is not None and not (isinstance(test_data, str) and len(test_data) == 64):
        raise EinetValueError("test_data must be null or the test split's SHA-256 fingerprint")
    select = check_select_options(record["select"])
    split = HeldOutSplit.from_dict(record["split"], "split")
    for name, expected in (("holdout", HOLDOUT), ("timing_images", TIMING)):
        if record[name] != expected or expected not in files:
            raise EinetValueError(f"{name} must be {expected}, listed in files")
    if record["test"] not in (None, TEST) or (record["test"] and TEST not in files):
        raise EinetValueError(f"test must be null or {TEST}, listed in files")
    exit_times = record["exit_times"]
    if not isinstance(exit_times, dict) or exit_times.get("kind") not in RELATIVE_KINDS:
        raise EinetValueError(f"exit_times kind must be one of {', '.join(RELATIVE_KINDS)}")
    horizon_ms = number("exit_times horizon_ms", exit_times.get("horizon_ms"), 0.0, 1e9, low_open=True)
    runtime = record["runtime"]
    if not isinstance(runtime, dict) or type(runtime.get("adapt")) is not bool:
        raise EinetTypeError("runtime must say whether it adapts (adapt: true/false), its threads and "
                             "adaptation settings")
    threads = int(number("runtime threads", runtime.get("threads"), 1, 1024, integer=True))
    devices = _checked_devices(record["devices"], files, folder, num_exits, len(spec.classes))
    if not isinstance(record["provenance"], dict):
        raise EinetTypeError("provenance must be an object")
    return Manifest(record["name"], variant, num_exits, spec, split, record["test"] is not None, test_data,
                    exit_times["kind"], horizon_ms, runtime["adapt"], threads,
                    check_adaptation(runtime.get("adaptation")), select, devices, record["provenance"], files, record)


def _checked_files(files: object, folder: Path) -> dict[str, str]:
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise EinetTypeError("files must map file names to SHA-256 digests")
    for name, digest in files.items():
        if Path(name).name != name or name == MANIFEST:
            raise EinetValueError(f"file {name!r} must be a plain name inside the bundle")
        if not (folder / name).is_file():
            raise EinetValueError(f"its file {name} is missing")
        if file_sha256(folder / name) != digest:
            raise EinetValueError(f"its file {name} fails its SHA-256 checksum: it is damaged or was replaced")
    return files


def _checked_network(network: object, files: Mapping[str, str]) -> tuple[Variant, int]:
    if not isinstance(network, dict) or network.get("file") != NETWORK or not isinstance(network.get("variant"), dict):
        raise EinetTypeError("network must name network.pt and its variant")
    if NETWORK not in files:  # else its weights would load unverified
        raise EinetValueError(f"{NETWORK} must be listed in files, with its SHA-256")
    if set(network["variant"]) != {"thumbnail", "second_look", "depth"}:
        raise EinetValueError("the network's variant must give thumbnail, second_look and depth")
    variant = Variant(**network["variant"])
    num_exits = network.get("num_exits")
    for what, value, high in (("the thumbnail's side", variant.thumbnail, 64),
                              ("the second look's depth", variant.depth, 100_000), ("num_exits", num_exits, 100_000)):
        if (value is not None or what == "num_exits") and (type(value) is not int or not 1 <= value <= high):
            raise EinetValueError(f"{what} must be a whole number in 1..{high}, got {value!r:.40}")
    if variant.second_look not in (None, "flip"):
        raise EinetValueError(f"second_look must be null or 'flip', got {variant.second_look!r}")
    assert isinstance(num_exits, int)
    return variant, num_exits


def _checked_input(spec: object) -> InputRecord:
    if not isinstance(spec, dict) or set(spec) != {"shape", "mean", "std", "classes"}:
        raise EinetTypeError("input must give shape, mean, std and classes")
    shape = spec["shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(n) is int and 1 <= n <= 65_536 for n in shape)):
        raise EinetValueError(f"input shape must be [C, H, W], got {shape!r:.80}")
    normalisation = {}
    for name in ("mean", "std"):
        values = spec[name]
        if not isinstance(values, list) or len(values) != shape[0]:
            raise EinetValueError(f"input {name} must have one number per channel")
        # a standard deviation is positive: a negative one turns every input over
        normalisation[name] = tuple(number(f"input {name}", v, 1e-6 if name == "std" else -1e3, 1e3) for v in values)
    classes = spec["classes"]
    if not (isinstance(classes, list) and 2 <= len(classes) <= 100_000 and all(printable_name(c) for c in classes)
            and len(set(classes)) == len(classes)):
        raise EinetValueError("input classes must be 2 to 100,000 distinct names (printable, at most 200 characters)")
    return InputRecord((shape[0], shape[1], shape[2]), normalisation["mean"], normalisation["std"], tuple(classes))


def _checked_devices(devices: object, files: Mapping[str, str], folder: Path, num_exits: int,
                     num_classes: int) -> tuple[DeviceEntry, ...]:
    if not isinstance(devices, list) or not devices:
        raise EinetTypeError("devices must be a list of at least one device (its ET-profile and configuration)")
    entries = []
    for entry in devices:
        if not isinstance(entry, dict) or set(entry) != set(DEVICE_FIELDS):
            raise EinetTypeError(f"each device must give {', '.join(DEVICE_FIELDS[:-1])} and {DEVICE_FIELDS[-1]}")
        if entry["et"] not in files or not DEVICE_FILE.fullmatch(str(entry["et"])):
            raise EinetValueError(f"a device's ET-profile {entry['et']!r} must be listed in files")
        device = entry["device"]
        if not (isinstance(device, dict) and device.get("kind") in ("cpu", "cuda")
                and printable_name(device.get("name"))
                and type(device.get("threads")) is int and 1 <= device["threads"] <= 1024):
            raise EinetValueError(f"a device must give kind (cpu or cuda), name and threads, got {device!r:.120}")
        if entry["key"] != device_key(device):
            raise EinetValueError(f"device key {entry['key']!r} does not match its device")
        predictor = entry["deployment"].get("predictor") if isinstance(entry["deployment"], dict) else None
        if predictor is not None and predictor not in files:
            raise EinetValueError(f"a device's predictor {predictor!r} must be listed in files")
        try:
            deployment = deployment_from_record(entry["deployment"], folder)
            _check_fits(deployment, num_exits, num_classes)
        except (TypeError, ValueError) as error:
            raise EinetValueError(f"the configuration of {entry['key']!r}: {error}") from None
        entries.append(DeviceEntry(entry["key"], device, entry["et"], deployment))
    return tuple(entries)


def _check_fits(deployment: Deployment, num_exits: int, num_classes: int) -> None:
    """A device's configuration must fit the network: its plans and ensemble weights one per exit, its
    time-zero answer one of the classes."""
    rule = deployment.rule
    for what, values in (("mask", deployment.mask), ("first_plan", deployment.first_plan),
                         ("ensemble weights", rule.weights)):
        if values is not None and len(values) != num_exits:
            raise EinetValueError(f"its {what} has {len(values)} entries for {num_exits} exits")
    if rule.time_zero_class is not None and not 0 <= rule.time_zero_class < num_classes:
        raise EinetValueError(f"its time-zero answer is class {rule.time_zero_class}, not one of the "
                              f"{num_classes} classes")
