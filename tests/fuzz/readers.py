"""Mutation fuzzing of einet's file readers, in worker subprocesses.

    python -m tests.fuzz.readers                              # 10,000 mutations of each kind, 2 workers
    python -m tests.fuzz.readers --kinds cs,deployment --mutations 2000 --seed 7
    python -m tests.fuzz.readers --replay cs:0:1234           # rerun one mutation here, with its traceback
    python -m tests.fuzz.readers --replay cs:0:1234 --write /tmp/bad.npz   # ... and keep the mutated file

Kinds, their readers and seed files (the files every mutation starts from):

- ``et``: :meth:`einet.formats.profiles.ETRecord.load`; committed ``benchmarks/fixtures/*/et.npz`` files.
- ``cs``: :meth:`einet.formats.profiles.CSProfile.load`; the first 64 samples of a committed held-out
  CS-profile (with its log-probabilities), saved at start (zip timestamps fixed, so seeds are
  byte-identical from run to run and every mutation replays).
- ``predictor``: :func:`einet.formats.predictor_file.read_predictor`; committed ``predictor.npz`` and
  ``predictor-ensemble.npz``.
- ``deployment``: :func:`einet.evaluation.select.load_deployment`; three deployments (a fixed plan, EINet with
  its predictor beside it, a confidence threshold) written at start by ``save_deployment``.
- ``checkpoint``: :func:`einet.formats.checkpoint.load_checkpoint` (returns the model and the checkpoint's
  state); the committed ``benchmarks/fixtures/b_alexnet_w025_mnist_cpu/model.pt`` (a version 2
  checkpoint, with its SHA-256; a torch zip file, so the zip mutations apply).

Mutations (mutation i of kind k and seed s comes from random.Random(f"{k}:{s}:{i}") alone, so any
one replays): flip a random bit; set a random byte to 0x00, 0xFF, 0x7F, 0x80 or a random value;
for zips, flip a bit or set a byte inside the central directory and end-of-central-directory
record (over a third of zip mutations); truncate; duplicate or delete a random byte range; for
deployments (JSON) also replace a random value with a hostile one (10**400, -1, NaN, Infinity, "",
an ill-typed list or object, lists nested 100,000 deep, true), delete a key or add an unknown one
(keys of the file's own objects: the top level and the rule, not the free-form ``validation`` map).
Each mutation's label names the field of the file it hit (e.g. ``cd-bitflip@1234:eocd.cd_size``).

Outcomes of a load: ``refused`` (ProfileFormatError for profiles and predictors, ValueError, its
subclasses included, for deployments and checkpoints); ``identical`` (loads equal to the original:
every array and tensor bit for bit, with dtype and shape, every field, the meta dict, types
included, except that an int equal to a float is the same number; for checkpoints every tensor of
the returned state, its spec and other entries, and the model's class, mode and state_dict);
findings: ``DIFFERENT`` (loads, but not equal
to the original: a silent wrong load), ``CRASH`` (any other exception, FileNotFoundError included,
since the mutated file always exists; or the worker died), ``HANG`` (a load over --hang seconds,
killed). The table's seconds are the workers' time on the kind (mutating, writing, loading and
comparing). Exit status 1 when there is any finding.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import io
import json
import math
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.fuzz.pool import Worker, serve

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "benchmarks" / "fixtures"
HANG_S = 10.0
KINDS = ("et", "cs", "predictor", "deployment", "checkpoint")
BAD = ("DIFFERENT", "CRASH", "HANG")
OUTCOMES = ("refused", "identical", *BAD)
SUFFIX = {"et": ".npz", "cs": ".npz", "predictor": ".npz", "deployment": ".json", "checkpoint": ".pt"}
MANIFEST = "seeds.json"


# ---------------------------------------------------------------- readers and their refusals

def reader(kind: str) -> Callable[[Path], Any]:
    """The public reader of a file kind."""
    if kind == "et":
        from einet.formats.profiles import ETRecord
        return ETRecord.load
    if kind == "cs":
        from einet.formats.profiles import CSProfile
        return CSProfile.load
    if kind == "predictor":
        from einet.formats.predictor_file import read_predictor
        return read_predictor
    if kind == "deployment":
        from einet.evaluation.select import load_deployment
        return load_deployment
    if kind == "checkpoint":
        from einet.formats.checkpoint import load_checkpoint
        return load_checkpoint  # (model, state)
    raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")


def refusals(kind: str) -> tuple[type[BaseException], ...]:
    """The exceptions that count as a proper refusal of a damaged file of this kind."""
    if kind in ("deployment", "checkpoint"):
        return (ValueError,)
    from einet.formats.npz import ProfileFormatError
    return (ProfileFormatError,)


# ---------------------------------------------------------------- comparing loads

def _same_float(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def _tensor_difference(a: Any, b: Any, path: str) -> str | None:
    """Where tensor `b` differs from tensor `a`: dtype, shape and device, then bit for bit
    (torch.equal on the raw bytes: -0.0 is not 0.0, and a NaN is the same NaN)."""
    torch = sys.modules["torch"]  # imported: `a` is a tensor
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return f"{path}: {a.dtype}{list(a.shape)} on {a.device} became {b.dtype}{list(b.shape)} on {b.device}"
    x, y = a.detach().cpu().contiguous().reshape(-1), b.detach().cpu().contiguous().reshape(-1)
    if x.numel() == 0 or torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
        return None
    at = int((x.view(torch.uint8) != y.view(torch.uint8)).nonzero()[0, 0]) // x.element_size()
    return f"{path}: element {at} {x[at].item()!r} became {y[at].item()!r}"


def difference(a: Any, b: Any, path: str = "value") -> str | None:
    """Where `b` differs from `a` (None: equal). Strict: types must match (True is not 1; an int
    equal to a float is the one exception), arrays and tensors bit for bit with dtype and shape,
    torch modules by class, training mode and state_dict, dataclasses field by field, dicts key by
    key and in order."""
    if type(a) is not type(b):
        if {type(a), type(b)} == {int, float} and a == b:
            return None  # 0 read as 0.0: the same number (bool is neither: True is not 1)
        return f"{path}: {type(a).__name__} {_short(a)} became {type(b).__name__} {_short(b)}"
    torch = sys.modules.get("torch")  # not imported: no tensor or module can be here
    if torch is not None and isinstance(a, torch.Tensor):
        return _tensor_difference(a, b, path)
    if torch is not None and isinstance(a, torch.nn.Module):
        if a.training != b.training:
            return f"{path}: training mode {a.training} became {b.training}"
        return difference(a.state_dict(), b.state_dict(), f"{path}.state_dict()")
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        for f in dataclasses.fields(a):
            found = difference(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
            if found:
                return found
        return None
    if isinstance(a, (np.ndarray, np.generic)):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype}{list(a.shape)} became {b.dtype}{list(b.shape)}"
        if a.tobytes() != b.tobytes():
            flat_a, flat_b = np.ravel(a), np.ravel(b)
            at = next(i for i in range(flat_a.size) if flat_a[i:i + 1].tobytes() != flat_b[i:i + 1].tobytes())
            return f"{path}: element {at} {flat_a[at]!r} became {flat_b[at]!r}"
        return None
    if isinstance(a, dict):
        if list(a) != list(b):
            lost, gained = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
            return f"{path}: keys lost {lost[:5]} gained {gained[:5]}" if lost or gained else f"{path}: key order"
        for key in a:
            found = difference(a[key], b[key], f"{path}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: length {len(a)} became {len(b)}"
        for k, (x, y) in enumerate(zip(a, b)):
            found = difference(x, y, f"{path}[{k}]")
            if found:
                return found
        return None
    if isinstance(a, float):
        return None if _same_float(a, b) else f"{path}: {a!r} became {b!r}"
    try:
        equal = bool(a == b)
    except Exception:
        equal = repr(a) == repr(b)
    return None if equal else f"{path}: {_short(a)} became {_short(b)}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(load: Callable[[], Any], original: Any,
             refused: tuple[type[BaseException], ...]) -> tuple[str, str]:
    """(outcome, detail) of one load: 'refused', 'identical', 'DIFFERENT' or 'CRASH' (HANG is the
    caller's: it times the load, or kills the process running it)."""
    try:
        value = load()
    except refused as error:
        return "refused", type(error).__name__
    except Exception as error:  # includes FileNotFoundError: the mutated file always exists
        return "CRASH", f"{type(error).__name__}: {error}"
    found = difference(original, value)
    return ("identical", "") if found is None else ("DIFFERENT", found)


# ---------------------------------------------------------------- the files' layout (for labels)

def cd_region(data: bytes) -> tuple[int, int]:
    """[start, end) of a zip's central directory and end record (from the EOCD's CD offset)."""
    eocd = data.rfind(b"PK\x05\x06")
    if eocd < 0:
        raise ValueError("not a zip: no end-of-central-directory record")
    start = struct.unpack_from("<I", data, eocd + 16)[0]
    if start == 0xFFFFFFFF or start > eocd:  # zip64 or prepended data: ask zipfile
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            start = int(archive.start_dir)
    return start, len(data)


_LOCAL = [(0, 4, "sig"), (4, 6, "version"), (6, 8, "flags"), (8, 10, "method"), (10, 14, "time"), (14, 18, "crc"),
          (18, 22, "csize"), (22, 26, "usize"), (26, 28, "name_len"), (28, 30, "extra_len")]
_CENTRAL = [(0, 4, "sig"), (4, 6, "made_by"), (6, 8, "version"), (8, 10, "flags"), (10, 12, "method"),
            (12, 16, "time"), (16, 20, "crc"), (20, 24, "csize"), (24, 28, "usize"), (28, 30, "name_len"),
            (30, 32, "extra_len"), (32, 34, "comment_len"), (34, 36, "disk"), (36, 38, "int_attr"),
            (38, 42, "ext_attr"), (42, 46, "local_offset")]
_EOCD = [(0, 4, "sig"), (4, 6, "disk"), (6, 8, "cd_disk"), (8, 10, "entries_here"), (10, 12, "entries"),
         (12, 16, "cd_size"), (16, 20, "cd_offset"), (20, 22, "comment_len")]


def zip_layout(data: bytes) -> list[tuple[int, int, str]]:
    """Sorted (start, end, name) segments of a well-formed zip: each member's local header fields,
    name, extra field and data, the central directory's fields and the end record's."""
    segments: list[tuple[int, int, str]] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    for info in infos:
        p, name = info.header_offset, info.filename.removesuffix(".npy")
        segments += [(p + a, p + b, f"local[{name}].{what}") for a, b, what in _LOCAL]
        n, m = struct.unpack_from("<HH", data, p + 26)
        segments += [(p + 30, p + 30 + n, f"local[{name}].name"), (p + 30 + n, p + 30 + n + m, f"local[{name}].extra"),
                     (p + 30 + n + m, p + 30 + n + m + info.compress_size, f"data[{name}]")]
    p, end = cd_region(data)
    for info in infos:
        if data[p:p + 4] != b"PK\x01\x02":
            break
        name = info.filename.removesuffix(".npy")
        segments += [(p + a, p + b, f"cd[{name}].{what}") for a, b, what in _CENTRAL]
        n, m, k = struct.unpack_from("<HHH", data, p + 28)
        segments += [(p + 46, p + 46 + n, f"cd[{name}].name"), (p + 46 + n, p + 46 + n + m, f"cd[{name}].extra"),
                     (p + 46 + n + m, p + 46 + n + m + k, f"cd[{name}].comment")]
        p += 46 + n + m + k
    eocd = data.rfind(b"PK\x05\x06")
    segments += [(eocd + a, eocd + b, f"eocd.{what}") for a, b, what in _EOCD]
    segments.append((eocd + 22, end, "eocd.comment"))
    return sorted(s for s in segments if s[1] > s[0])


def json_layout(data: bytes) -> list[tuple[int, int, str]]:
    """One segment per line of an indented JSON file, named by the key it sets (list elements
    and closing brackets: the key of the nearest line above)."""
    segments: list[tuple[int, int, str]] = []
    key, start = "top", 0
    for line in data.splitlines(keepends=True):
        found = re.match(rb'\s*"([^"]*)":', line)
        if found:
            key = found.group(1).decode(errors="replace")
        segments.append((start, start + len(line), f"json[{key}]"))
        start += len(line)
    return segments


def where(layout: list[tuple[int, int, str]], offset: int) -> str:
    """The name of the segment holding byte `offset`."""
    k = bisect.bisect_right(layout, (offset, math.inf, "")) - 1
    if k >= 0 and layout[k][0] <= offset < layout[k][1]:
        return layout[k][2]
    return "gap"


# ---------------------------------------------------------------- mutations

@dataclass
class Seed:
    """A seed file of a kind: its bytes, layout (for labels) and, for zips, the central directory."""

    name: str
    data: bytes
    layout: list[tuple[int, int, str]]
    cd: tuple[int, int] | None  # zips: [start, end) of the central directory + end record
    tree: Any = None  # JSON: the parsed file


def make_seed(name: str, data: bytes) -> Seed:
    if name.endswith(".json"):
        return Seed(name, data, json_layout(data), None, json.loads(data))
    return Seed(name, data, zip_layout(data), cd_region(data))


SPECIAL_BYTES = (0x00, 0xFF, 0x7F, 0x80)
ZIP_MUTATIONS = {"bitflip": 20, "byte": 15, "cd-bitflip": 25, "cd-byte": 12, "truncate": 10, "duplicate": 9,
                 "delete": 9}  # 37% inside the central directory and end record
JSON_MUTATIONS = {"bitflip": 15, "byte": 10, "truncate": 5, "duplicate": 5, "delete": 5, "json-value": 40,
                  "json-delete-key": 10, "json-add-key": 10}
DEEP = 100_000
HOSTILE_JSON = {  # label: raw JSON text
    "10**400": "1" + "0" * 400, "-1": "-1", "NaN": "NaN", "Infinity": "Infinity", "string": '""',
    "list": '[null, "x"]', "dict": '{"": [null]}', "deep": "[" * DEEP + "]" * DEEP, "true": "true",
}
SENTINEL = "\x00fuzz-sentinel\x00"
SCHEMA_OBJECTS = ((), ("rule",))  # the objects whose keys are the format's (not free-form maps)


def _weighted(r: random.Random, table: dict[str, int]) -> str:
    return r.choices(list(table), weights=list(table.values()))[0]


def _range(r: random.Random, size: int) -> tuple[int, int]:
    """A random byte range: its start uniform, its length log-uniform in [1, size]."""
    start = r.randrange(size)
    length = max(1, int(2 ** r.uniform(0.0, math.log2(size))))
    return start, min(size, start + length)


def _values(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths of every value in a JSON tree (not the root)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    out: list[tuple[Any, ...]] = []
    for key, value in items:
        out.append((*path, key))
        out += _values(value, (*path, key))
    return out


def _get(tree: Any, path: Sequence[Any]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _json_type(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "null" if value is None else type(value).__name__


def mutate_json(r: random.Random, seed: Seed, how: str) -> tuple[str, bytes]:
    tree = json.loads(seed.data)
    if how == "json-value":
        path = r.choice(_values(tree))
        original = _get(tree, path)
        choices = [k for k in HOSTILE_JSON if not (k == "true" and isinstance(original, bool))]
        hostile = r.choice(choices)
        _get(tree, path[:-1])[path[-1]] = SENTINEL
        text = json.dumps(tree, indent=2).replace(json.dumps(SENTINEL), HOSTILE_JSON[hostile])
        where_ = ".".join(map(str, path))
        return f"json-value:{where_}={hostile}(was:{_json_type(original)})", text.encode() + b"\n"
    objects = [_get(tree, p) for p in SCHEMA_OBJECTS]
    k = r.randrange(len(objects))
    target, prefix = objects[k], "".join(f"{p}." for p in SCHEMA_OBJECTS[k])
    if how == "json-delete-key":
        key = r.choice(list(target))
        del target[key]
        label = f"json-delete-key:{prefix}{key}"
    else:
        key = r.choice(["fuzz", "__class__", "Policy", "predictor_path", ""])
        target[key] = r.choice([0, None, "x", [], {}])
        label = f"json-add-key:{prefix}{key or '(empty)'}={_json_type(target[key])}"
    return label, json.dumps(tree, indent=2).encode() + b"\n"


def mutate(r: random.Random, seed: Seed) -> tuple[str, bytes]:
    """(label, mutated bytes) of `seed`, drawn from `r` alone."""
    data = bytearray(seed.data)
    how = _weighted(r, JSON_MUTATIONS if seed.tree is not None else ZIP_MUTATIONS)
    if how.startswith("json-"):
        return mutate_json(r, seed, how)
    low, high = seed.cd if how.startswith("cd-") and seed.cd is not None else (0, len(data))
    if how.endswith("bitflip"):
        offset, bit = r.randrange(low, high), r.randrange(8)
        data[offset] ^= 1 << bit
        return f"{how}@{offset}.{bit}:{where(seed.layout, offset)}", bytes(data)
    if how.endswith("byte"):
        offset = r.randrange(low, high)
        value = r.choice(SPECIAL_BYTES) if r.random() < 0.7 else r.randrange(256)
        if value == data[offset]:
            value = r.randrange(256)
        data[offset] = value
        return f"{how}@{offset}={value:#04x}:{where(seed.layout, offset)}", bytes(data)
    if how == "truncate":
        size = r.randrange(len(data))
        return f"truncate@{size}:{where(seed.layout, size)}", bytes(data[:size])
    start, stop = _range(r, len(data))
    if how == "duplicate":
        return (f"duplicate[{start}:{stop}]:{where(seed.layout, start)}",
                bytes(data[:stop] + data[start:stop] + data[stop:]))
    return f"delete[{start}:{stop}]:{where(seed.layout, start)}", bytes(data[:start] + data[stop:])


def mutation(kind: str, seed: int, index: int, seeds: Sequence[Seed]) -> tuple[Seed, str, bytes]:
    """Mutation `index` of `kind` under `seed`: (the seed file it starts from, label, bytes)."""
    r = random.Random(f"{kind}:{seed}:{index}")
    base = seeds[r.randrange(len(seeds))]
    label, data = mutate(r, base)
    return base, f"{base.name}:{label}", data


# ---------------------------------------------------------------- seed files

def _fixed_zip_times(data: bytes) -> bytes:
    """The zip with every member's modification time set to 1980-01-01 00:00 (local headers and
    central directory), so a file written now is byte-identical to one written at any other time."""
    out = bytearray(data)
    stamp = struct.pack("<HH", 0, (0 << 9) | (1 << 5) | 1)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    for info in infos:
        out[info.header_offset + 10:info.header_offset + 14] = stamp
    p, _ = cd_region(data)
    while out[p:p + 4] == b"PK\x01\x02":
        out[p + 12:p + 16] = stamp
        p += 46 + sum(struct.unpack_from("<HHH", out, p + 28))
    return bytes(out)


def write_seeds(directory: Path) -> dict[str, list[str]]:
    """Writes (or copies) every kind's seed files into `directory`; returns {kind: [file names]}."""
    from einet.evaluation.select import Deployment, save_deployment
    from einet.formats.profiles import CSProfile
    from einet.rules import AnswerRule

    directory.mkdir(parents=True, exist_ok=True)
    model = FIXTURES / "b_alexnet_w025_mnist_cpu"
    seeds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for kind, source in [("et", model / "et.npz"), ("et", FIXTURES / "vgg16_fine_w025_cpu" / "et.npz"),
                         ("predictor", model / "predictor-ensemble.npz"), ("predictor", model / "predictor.npz"),
                         ("checkpoint", model / "model.pt")]:
        name = f"{kind}-{source.parent.name}-{source.name}"
        shutil.copyfile(source, directory / name)
        seeds[kind].append(name)
    import torch  # the checkpoint seed must be verified on load (version 2, a SHA-256), not a version 1 file

    state = torch.load(directory / seeds["checkpoint"][0], map_location="cpu", weights_only=True)
    assert state["version"] == 2 and isinstance(state.get("sha256"), str), "the checkpoint seed must be version 2"
    small = CSProfile.load(model / "cs-holdout.npz").subset(np.arange(64))
    assert small.has_log_probs
    small.save(directory / "cs-64.npz")
    (directory / "cs-64.npz").write_bytes(_fixed_zip_times((directory / "cs-64.npz").read_bytes()))
    seeds["cs"].append("cs-64.npz")

    from einet.predictor import load_predictor  # torch: for save_deployment's predictor only

    predictor = load_predictor(model / "predictor-ensemble.npz")
    validation = {"EINet | ensemble + time-zero": 0.9876543210987654, "statistics | best": 0.912,
                  "dynamic 80% | latest": 0.5}
    deployments = {
        "deployment-fixed.json": Deployment(
            policy="statistics", rule=AnswerRule("best"), dist="uniform", scale=1.0, mask=(True, False, True),
            validation=validation, network="b_alexnet"),
        "deployment-einet.json": Deployment(
            policy="EINet", rule=predictor.rule, dist="normal", scale=0.75, predictor="predictor-deployed.npz",
            first_plan=(True, True, False), signal=predictor.signal, planning_seconds=2.5e-05,
            validation=validation),
        "deployment-threshold.json": Deployment(
            policy="dynamic 80%", rule=AnswerRule("latest", time_zero_class=3, time_zero_accuracy=0.125),
            dist="uniform", scale=2.0, threshold=0.8),
    }
    for name, deployment in deployments.items():
        save_deployment(directory / name, deployment, predictor if deployment.predictor else None)
        seeds["deployment"].append(name)
    (directory / MANIFEST).write_text(json.dumps(seeds, indent=2))
    return seeds


def read_seeds(directory: Path, kind: str) -> list[Seed]:
    names = json.loads((directory / MANIFEST).read_text())[kind]
    return [make_seed(name, (directory / name).read_bytes()) for name in names]


# ---------------------------------------------------------------- running

def worker(directory: Path, kind: str, seed: int, start: int, stop: int) -> None:
    """Runs mutations start..stop-1 of `kind`; one line before ('B') and after ('E') each load."""
    load, refused = reader(kind), refusals(kind)
    seeds = read_seeds(directory, kind)
    originals = {s.name: load(directory / s.name) for s in seeds}  # must load: else this script's bug
    path = directory / f"mutant-{os.getpid()}{SUFFIX[kind]}"
    out = sys.stdout
    try:
        for index in range(start, stop):
            began = time.perf_counter()
            base, label, data = mutation(kind, seed, index, seeds)
            path.write_bytes(data)
            out.write(f"B {index}\n")
            out.flush()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = time.perf_counter()
                outcome, detail = classify(lambda: load(path), originals[base.name], refused)
                loaded = time.perf_counter() - loaded
            categories = ",".join(sorted({w.category.__name__ for w in caught})) or "-"
            detail = detail.replace("\n", " ").replace("\t", " ")[:400]
            seconds = time.perf_counter() - began
            out.write(f"E {index} {outcome} {loaded:.6f} {seconds:.6f} {categories} {label}\t{detail}\n")
        out.flush()
    finally:
        path.unlink(missing_ok=True)


@dataclass
class Tally:
    counts: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    seconds: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    slowest: dict[str, float] = field(default_factory=dict)
    warnings: collections.Counter[str] = field(default_factory=collections.Counter)
    by_mutation: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    findings: list[tuple[str, str, int, str, str]] = field(default_factory=list)  # kind, outcome, index, label, detail

    def add(self, kind: str, outcome: str, index: int, label: str, detail: str) -> None:
        self.counts[kind][outcome] += 1
        if outcome in BAD:
            how = label.split(":")[1].split("@")[0].split("[")[0]
            self.by_mutation[(kind, outcome, how)] += 1
            self.findings.append((kind, outcome, index, label, detail))


def label_of(directory: Path, kind: str, seed: int, index: int) -> str:
    return mutation(kind, seed, index, read_seeds(directory, kind))[1]


def run(directory: Path, kinds: Sequence[str], mutations: int, workers: int, seed: int, chunk: int, hang: float,
        memory_gb: float) -> Tally:
    tally = Tally()
    pending: collections.deque[tuple[str, int, int]] = collections.deque(
        (kind, start, min(start + chunk, mutations)) for kind in kinds for start in range(0, mutations, chunk))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def start() -> Worker | None:
        if not pending:
            return None
        kind, first, stop = pending.popleft()
        return Worker([sys.executable, *(["-S"] if sys.flags.no_site else []), "-X", "faulthandler",
                    "-m", __spec__.name, "--worker", f"{kind}:{seed}:{first}:{stop}", "--seeds", str(directory),
                    "--memory-gb", str(memory_gb)], first, stop, env, kind)

    def retire(w: Worker, stderr: str, hung: bool) -> None:
        resume = w.done_through + 1
        if w.current is not None:  # died (or was killed) inside a load
            label = label_of(directory, w.kind, seed, w.current)
            if hung:
                tally.add(w.kind, "HANG", w.current, label, f"killed after {hang:.0f} s inside the load")
            else:
                lines = [line.strip() for line in stderr.strip().splitlines()]
                tally.add(w.kind, "CRASH", w.current, label,
                          f"worker died with exit status {w.process.returncode}: {' | '.join(lines[:2])}"[:400])
            resume = w.current + 1
        elif resume < w.stop:
            raise RuntimeError(f"a {w.kind} worker exited with {w.process.returncode} outside a load, after "
                               f"mutation {w.done_through}: {stderr.strip()[-1500:]}")
        if resume < w.stop:
            pending.appendleft((w.kind, resume, w.stop))

    def handle(w: Worker, line: str) -> None:
        if line.startswith("B "):
            w.current = int(line.split(" ")[1])
            return
        head, _, detail = line.partition("\t")
        _, index, outcome, loaded, seconds, caught, label = head.split(" ", 6)
        w.current, w.done_through = None, int(index)
        if float(loaded) > hang:  # finished, but slowly
            outcome, detail = "HANG", f"took {float(loaded):.1f} s ({outcome})"
        tally.add(w.kind, outcome, int(index), label, detail)
        tally.seconds[w.kind] += float(seconds)
        tally.slowest[w.kind] = max(tally.slowest.get(w.kind, 0.0), float(loaded))
        if caught != "-":
            tally.warnings.update(f"{w.kind}: {c}" for c in caught.split(","))

    serve(workers, start, lambda running: bool(pending) or running, handle, retire, hang, max(120.0, 4 * hang))
    return tally


def report(tally: Tally, kinds: Sequence[str], seed: int, seconds: float, workers: int, shown: int = 3) -> int:
    print(f"reader fuzz: seed {seed}, {workers} worker processes, {seconds:.0f} s wall")
    header = f"{'kind':<11} {'mutations':>9} {'refused':>8} {'identical':>9} {'DIFFERENT':>9} {'CRASH':>6} " \
             f"{'HANG':>5} {'seconds':>8} {'slowest':>8}"
    print(header)
    print("-" * len(header))
    totals: collections.Counter[str] = collections.Counter()
    for kind in kinds:
        c = tally.counts[kind]
        totals.update(c)
        spent, slowest = tally.seconds.get(kind, 0.0), tally.slowest.get(kind, 0.0)
        print(f"{kind:<11} {sum(c.values()):>9} {c['refused']:>8} {c['identical']:>9} {c['DIFFERENT']:>9} "
              f"{c['CRASH']:>6} {c['HANG']:>5} {spent:>8.1f} {slowest:>7.3f}s")
    print("-" * len(header))
    print(f"{'all':<11} {sum(totals.values()):>9} {totals['refused']:>8} {totals['identical']:>9} "
          f"{totals['DIFFERENT']:>9} {totals['CRASH']:>6} {totals['HANG']:>5} {sum(tally.seconds.values()):>8.1f}")
    if tally.warnings:
        print("warnings during loads (not findings): " + ", ".join(f"{k} {v}" for k, v in tally.warnings.items()))
    if not tally.findings:
        print("no findings")
        return 0
    print("findings by kind, outcome and mutation:")
    for (kind, outcome, how), count in sorted(tally.by_mutation.items()):
        print(f"  {kind:<11} {outcome:<9} {how:<16} {count}")
    print(f"first {shown} findings of each kind and outcome, with their replay command:")
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    for kind, outcome, index, label, detail in tally.findings:
        seen[(kind, outcome)] += 1
        if seen[(kind, outcome)] <= shown:
            print(f"  [{kind} {outcome}] python -m tests.fuzz.readers --replay {kind}:{seed}:{index}")
            print(f"      {label}")
            print(f"      {detail[:300]}")
    return 1


def replay(directory: Path, spec: str, write: str | None) -> int:
    """Reruns one mutation in this process; prints its outcome (and traceback, for a crash)."""
    kind, seed, index = spec.split(":")
    seeds = read_seeds(directory, kind)
    base, label, data = mutation(kind, int(seed), int(index), seeds)
    print(f"mutation {spec}: {label} ({len(base.data)} -> {len(data)} bytes)")
    path = directory / f"mutant{SUFFIX[kind]}"
    path.write_bytes(data)
    if write:
        Path(write).write_bytes(data)
        print(f"mutated file written to {write}")
    load = reader(kind)
    original = load(directory / base.name)
    began = time.perf_counter()
    try:
        value = load(path)
    except refusals(kind) as error:
        print(f"refused ({time.perf_counter() - began:.3f} s): {type(error).__name__}: {error}")
        return 0
    except Exception:
        print(f"CRASH ({time.perf_counter() - began:.3f} s):")
        traceback.print_exc(file=sys.stdout)
        return 1
    found = difference(original, value)
    print(f"loaded in {time.perf_counter() - began:.3f} s: " + ("identical to the original" if found is None
                                                               else f"DIFFERENT: {found}"))
    return 0 if found is None else 1


def _limit_memory(gigabytes: float) -> None:
    if gigabytes > 0:
        import resource

        limit = int(gigabytes * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutations", type=int, default=10_000, help="mutations of each kind (default 10,000)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--workers", type=int, default=2, help="worker subprocesses at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=2500, help="mutations per worker process")
    parser.add_argument("--hang", type=float, default=HANG_S, help="seconds a load may take (default 10)")
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space limit per worker (0: none)")
    parser.add_argument("--shown", type=int, default=3, help="findings shown per kind and outcome")
    parser.add_argument("--replay", metavar="KIND:SEED:INDEX", help="rerun one mutation here, with its traceback")
    parser.add_argument("--write", metavar="PATH", help="with --replay: also write the mutated file to PATH")
    parser.add_argument("--worker", metavar="KIND:SEED:START:STOP", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, seed, start, stop = args.worker.split(":")
        _limit_memory(args.memory_gb)
        worker(Path(args.seeds), kind, int(seed), int(start), int(stop))
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        parser.error(f"unknown kinds {unknown}: choose from {', '.join(KINDS)}")
    if args.mutations < 1 or args.workers < 1 or args.chunk < 1 or args.hang <= 0:
        parser.error("--mutations, --workers, --chunk and --hang must be positive")
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as tmp:
        directory = Path(tmp)
        write_seeds(directory)
        if args.replay:
            return replay(directory, args.replay, args.write)
        began = time.monotonic()
        tally = run(directory, kinds, args.mutations, args.workers, args.seed, args.chunk, args.hang, args.memory_gb)
        return report(tally, kinds, args.seed, time.monotonic() - began, args.workers, args.shown)


if __name__ == "__main__":
    sys.exit(main())
