"""The one validation layer: numbers, output paths, JSON and memory estimates.

Every command-line option and every field einet reads from a file goes through these
checks, so that a hostile or mistyped value is refused *before any work*, in one line
naming the value, never later as a traceback, a hang, a NaN result or a process killed
for memory:

- :func:`number` (and :func:`integer_option` / :func:`real_option`, its argparse forms):
  of the right type, finite, within bounds.
- :func:`check_outputs`: the files a command will write never equal a file it reads (or
  lie inside a folder it reads), never equal each other, can be written, and are files (a symlink
  counts as its target; a FIFO or a device is refused).
- :func:`parse_json`: JSON without NaN/Infinity literals and with bounded nesting.
- :func:`check_memory`: a size estimate refused above a limit the user can raise
  (``EINET_MEMORY_LIMIT_GB``), before the allocation is attempted.
- :func:`open_regular`: every file einet reads is opened as a regular file or not at all.

Only the standard library and numpy: importing it costs nothing.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import write_target
from .errors import EinetTypeError, EinetValueError

__all__ = ["MAX_CLASSES", "MAX_JSON_DEPTH", "MAX_THREADS", "ResourceLimitError", "check_memory", "check_outputs",
           "integer_option", "memory_limit", "number", "open_regular", "parse_json", "plain_json", "printable_name",
           "real_option", "summary_path"]

MAX_CLASSES = 100_000  # classes of a dataset, a checkpoint, a profile (class indices fit an int32)
MAX_THREADS = 1024  # torch intra-op threads: far above any machine einet runs on
MAX_JSON_DEPTH = 64  # nesting of a deployment or a file header: real ones nest 3 deep
MEMORY_LIMIT_VARIABLE = "EINET_MEMORY_LIMIT_GB"


class ResourceLimitError(EinetValueError):
    """Work refused because its estimated size is above a limit the user can raise."""


def number(name: str, value: object, low: float | None = None, high: float | None = None, *,
           integer: bool = False, low_open: bool = False) -> Any:
    """`value` checked: a real number (an integer if `integer`; never a bool), finite, in
    [low, high] (or (low, high] with `low_open`). Returns it as int or float; else TypeError or
    ValueError naming `name` and the value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EinetTypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r:.40}")
    whole = isinstance(value, (int, np.integer)) or (math.isfinite(value) and float(value).is_integer())
    if integer and not whole:
        raise EinetTypeError(f"{name} must be an integer, got {value!r:.40}")
    try:
        checked: int | float = int(value) if integer else float(value)
    except OverflowError:  # an int beyond float range (JSON reads 10**400 as one)
        raise EinetValueError(f"{name} must be a finite number, got {value!r:.40}") from None
    if not integer and not math.isfinite(checked):
        raise EinetValueError(f"{name} must be a finite number, got {value!r:.40}")
    too_low = low is not None and (checked <= low if low_open else checked < low)
    if too_low or (high is not None and checked > high):
        lower = "-inf" if low is None else f"{low:g}"
        raise EinetValueError(f"{name} must lie in {'(' if low_open else '['}{lower}, "
                              f"{'inf' if high is None else f'{high:g}'}], got {value!r:.40}")
    return checked


def _option(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse `type` whose refusal argparse prints as ``argument --x: <reason>`` (exit status 2)."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = what  # argparse names the type in its "invalid <type> value" fallback
    return convert


def integer_option(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in [low, high] (``1e3`` is read as 1000)."""
    def parse(text: str) -> int:
        try:
            value: float = int(text)
        except ValueError:
            value = float(text)  # "1e3"; "abc" raises ValueError, "nan" fails the check below
        return int(number("the value", value, low, high, integer=True))
    return _option(parse, "integer")


def real_option(low: float | None = None, high: float | None = None, *,
                low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] (or (low, high] with `low_open`)."""
    return _option(lambda text: float(number("the value", float(text), low, high, low_open=low_open)), "number")


def summary_path(out: str | os.PathLike[str]) -> Path:
    """Where a command writes the JSON summary of `out` (``model.pt`` -> ``model.summary.json``): a
    name that never equals `out` itself, whatever its suffix."""
    return Path(out).with_suffix(".summary.json")


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def check_outputs(outputs: Mapping[str, str | os.PathLike[str]],
                  inputs: Mapping[str, str | os.PathLike[str] | None] | Iterable[tuple[str, Any]] = (),
                  creates_folders: bool = False) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other, or cannot be written.

    `outputs` and `inputs` map a description (an option, e.g. ``"--out"``) to a path. An input that
    is a folder protects everything under it (a dataset folder); ``None`` inputs are skipped. Each
    output's folder must exist (with `creates_folders`, for commands that make their output folder:
    be creatable below a writable one), and an output may not be an existing folder.
    """
    pairs = inputs.items() if isinstance(inputs, Mapping) else inputs
    read = [(name, _resolved(path)) for name, path in pairs if path is not None]
    written: dict[Path, str] = {}
    for name, given in outputs.items():
        path = _resolved(given)
        if path in written:
            raise EinetValueError(f"{name} {given} is also {written[path]}: each output needs its own path")
        written[path] = f"{name} {given}"
        for source, source_path in read:
            if path == source_path or (source_path.is_dir() and source_path in path.parents):
                inside = "" if path == source_path else f"inside {source} "
                raise EinetValueError(f"{name} {given} would overwrite {inside}{source} {source_path if inside else ''}"
                                      .rstrip() + ": give another output path")
        if path.is_dir():
            raise EinetValueError(f"{name} {given} is a folder: name a file")
        folder = path.parent
        if not folder.exists() and not creates_folders:
            raise FileNotFoundError(f"{name} {given}: the folder {Path(given).parent} does not exist")
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{name} {given}: cannot write into {folder}")
        if path.exists() and not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{name} {given}: cannot replace it (its folder is not writable)")
        try:
            write_target(given)  # a FIFO or a device (/dev/stdout) would be replaced, not written to
        except ValueError as error:
            raise EinetValueError(f"{name} {error}") from None


_SCAN_CHUNK = 1 << 18  # bytes of JSON scanned at once: the scan's own arrays stay a few MiB
_QUOTE, _OPEN, _CLOSE = (np.frombuffer(chars, np.uint8) for chars in (b'"', b"[{", b"]}"))


def _nesting(text: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON `text`, brackets inside strings skipped.

    One linear pass a chunk at a time: the escapes are dropped first, left to right as a JSON reader
    reads them (so every quote left opens or closes a string), then a bracket is outside strings when
    an even number of quotes precede it. Memory: at most two copies of the text, none if it has no
    escapes (a backtracking regex over a long string needed ~120 times its size)."""
    bare = np.frombuffer(text.replace(b"\\\\", b"").replace(b'\\"', b""), np.uint8)
    depth = deepest = inside = 0  # inside: whether the chunk starts inside a string
    for start in range(0, len(bare), _SCAN_CHUNK):
        chunk = bare[start:start + _SCAN_CHUNK]
        quotes = np.cumsum(chunk == _QUOTE, dtype=np.int32) + inside
        outside = quotes % 2 == 0
        steps = (np.isin(chunk, _OPEN) & outside).astype(np.int32) - (np.isin(chunk, _CLOSE) & outside)
        levels = np.cumsum(steps, dtype=np.int32) + depth
        deepest, depth, inside = max(deepest, int(levels.max())), int(levels[-1]), int(quotes[-1]) % 2
    return deepest


def _no_constant(name: str) -> Any:
    raise EinetValueError(f"{name} is not a JSON number")


def parse_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON as einet reads it from files: nesting at most `max_depth` deep (checked before parsing,
    so no RecursionError), no NaN/Infinity literals, integers of at most 4,300 digits. ValueError
    for anything else."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    depth = _nesting(raw)
    if depth > max_depth:
        raise EinetValueError(f"JSON nested {depth} deep, more than the {max_depth} allowed")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (UnicodeDecodeError, RecursionError) as error:
        raise EinetValueError(f"not JSON: {type(error).__name__}: {error}") from None


def memory_limit() -> int:
    """Bytes one estimated allocation may take: ``EINET_MEMORY_LIMIT_GB`` if set, else half the
    machine's physical memory (8 GiB where that cannot be read)."""
    text = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if text:
        return int(number(MEMORY_LIMIT_VARIABLE, float(text), 0.0, None, low_open=True) * 1024**3)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (AttributeError, ValueError, OSError):
        return 8 * 1024**3


def check_memory(nbytes: float, what: str) -> None:
    """Refuse work whose estimated memory `nbytes` exceeds :func:`memory_limit`, naming `what` and
    how to raise the limit (the estimate is made from the options, before anything is allocated)."""
    limit = memory_limit()
    if not nbytes <= limit:
        raise ResourceLimitError(f"{what} needs about {nbytes / 1024**3:.3g} GiB, above the limit of "
                          f"{limit / 1024**3:.3g} GiB: if this is intended, raise {MEMORY_LIMIT_VARIABLE}")


def open_regular(path: str | os.PathLike[str], follow_symlinks: bool = True) -> io.BufferedReader:
    """`path` opened for reading, if it is a regular file: anything else raises OSError. open() of a FIFO
    would block until someone writes to it, and /dev/zero never ends; with O_NONBLOCK open returns at
    once, and fstat tells."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags if follow_symlinks else flags | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def printable_name(value: object) -> bool:
    """A printable name (a bundle, a class, a device): at most 200 characters, no control characters."""
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable()


def plain_json(value: Any, max_items: int = 1000, max_depth: int = 16) -> bool:
    """Whether `value` is small plain JSON (None, bools, ints, finite floats, strings of at most 4,096
    characters, lists, str-keyed dicts): at most `max_items` values, nested at most `max_depth` deep.
    What a checkpoint or a config may hold as a constructor's keyword arguments."""
    budget = [max_items]

    def plain(item: Any, depth: int) -> bool:
        budget[0] -= 1
        if budget[0] < 0 or depth > max_depth:
            return False
        if item is None or isinstance(item, (bool, int)):
            return True
        if isinstance(item, float):
            return math.isfinite(item)
        if isinstance(item, str):
            return len(item) <= 4096
        if isinstance(item, (list, tuple)):
            return all(plain(inner, depth + 1) for inner in item)
        if isinstance(item, dict):
            return all(isinstance(key, str) and plain(inner, depth + 1) for key, inner in item.items())
        return False

    return plain(value, 0)
