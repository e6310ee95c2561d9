"""Checkpoints: written atomically and durably, each with a SHA-256 of its content; read with
``torch.load(weights_only=True)`` (no code from the file runs), verified, their spec checked and the
model's skeleton built on the meta device before anything is allocated. A checkpoint of a model
converted from a user's constructor names that constructor; :func:`load_checkpoint` imports it only
when the caller says so (see there)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .._atomic import atomic_write
from ..choices import EXIT_HEADS
from ..errors import EinetValueError
from ..models.base import MAX_LIGHT_POOL, MultiExitNetwork, is_light_pool
from ..models.constructor import CONVERTED, build_converted, resolve_constructor
from ..validation import plain_json
from .split import HeldOutSplit

CHECKPOINT_VERSION = 2  # 2: a SHA-256 of the content, verified on load; 1 (no checksum) still loads, unverified

# A checkpoint's model spec: the zoo name plus these keyword arguments, within these bounds. The
# bounds only keep the (meta-device) skeleton build sane; what really bounds the model is that its
# tensors must match the ones in the file.
_SPEC_INTEGERS = {"num_classes": (1, 100_000), "in_channels": (1, 64), "growth": (1, 1024),
                  "compress_every": (1, 1024)}
_SPEC_MAX_WIDTH = 16.0
_SPEC_KEYS = ("num_classes", "in_channels", "width", "exit_head", "exit_pools")
_MSDNET_SPEC_KEYS = ("growth", "compress_every")
_CHECKSUM = "sha256"
# A converted model's spec (see constructor.build_converted): these keys, the constructor as a
# 'package.module:callable' name, kwargs as small plain JSON, and bounded exits and input shape.
_CONVERTED_KEYS = ("name", "constructor", "kwargs", "exits", "input_shape", "num_classes")
_MAX_NAME = 256  # characters of a constructor or module name
_MAX_EXITS = 1024
_MAX_KWARGS_ITEMS = 1000  # values in the kwargs, nested ones included
_MAX_INPUT_SIZE = 1 << 26  # elements of one input sample


def state_digest(state: Mapping[Any, Any]) -> str:
    """SHA-256 over a checkpoint's content (everything but the checksum itself), in a fixed order:
    mapping keys sorted, every tensor as dtype, shape and raw bytes, numbers exactly (floats in hex)."""
    hasher = hashlib.sha256()

    def put(tag: bytes, data: bytes) -> None:
        hasher.update(b"%s%d:" % (tag, len(data)))
        hasher.update(data)

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
            put(b"T", f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            if tensor.numel():
                hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # .data: a memoryview, no copy
        elif isinstance(value, Mapping):
            items = sorted(((key, item) for key, item in value.items() if value is not state or key != _CHECKSUM),
                           key=lambda pair: (type(pair[0]).__name__, repr(pair[0])))
            put(b"D", str(len(items)).encode())
            for key, item in items:
                feed(key)
                feed(item)
        elif isinstance(value, (list, tuple)):  # a torch.Size too; lists and tuples alike
            put(b"L", str(len(value)).encode())
            for item in value:
                feed(item)
        elif isinstance(value, float):
            put(b"F", value.hex().encode())
        elif isinstance(value, (bytes, bytearray)):
            put(b"B", bytes(value))
        else:  # None, bools, ints, strings; anything else torch.load(weights_only=True) allows by its repr
            put(type(value).__name__.encode(), repr(value).encode())

    feed(state)
    return hasher.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, model_spec: dict[str, Any] | None = None,
                    **extra: Any) -> None:
    """Write a checkpoint atomically and durably (:func:`einet._atomic.atomic_write`): a crash
    mid-write leaves the previous one intact, and concurrent savers of one path never mix.

    The checkpoint holds a SHA-256 of its content (``"sha256"``, see :func:`state_digest`),
    which :func:`load_checkpoint` verifies.
    """
    path = Path(path)
    state: dict[str, Any] = {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "spec": model_spec or {}}
    for key, value in extra.items():
        if isinstance(value, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)):
            state[key] = value.state_dict()
        elif isinstance(value, torch.Generator):
            state[key] = value.get_state()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # a History, a TrainConfig
            state[key] = dataclasses.asdict(value)
        else:
            state[key] = value
    state[_CHECKSUM] = state_digest(state)
    with atomic_write(path) as file:
        torch.save(state, file)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no code runs) and verify its checksum.

    Version 2 checkpoints must carry a SHA-256 of their content that matches it; otherwise, as for
    any unreadable file, a ValueError names the file. Version 1 checkpoints (written before
    checksums existed) still load, **unverified**: damage inside them goes unnoticed.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's message advises weights_only=False: never, for a hostile file
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise EinetValueError(f"{path} is refused: it holds objects a checkpoint may not hold"
                              f"{f' ({named[1]})' if named else ''}, only tensors and plain data (or it is damaged)"
                              ) from None
    except Exception as error:  # torch raises many types for a damaged file
        raise EinetValueError(f"{path} is not a readable einet checkpoint: {error}") from None
    version = state.get("version") if isinstance(state, dict) else None
    if type(version) is not int or version not in (1, CHECKPOINT_VERSION) or "model" not in state:
        raise EinetValueError(f"{path} is not an einet checkpoint of version 1 or {CHECKPOINT_VERSION}")
    if version >= 2:
        stored = state.get(_CHECKSUM)
        if not isinstance(stored, str):
            raise EinetValueError(f"{path} has no checksum: a version {version} checkpoint must carry one (damaged?)")
        actual = state_digest(state)
        if actual != stored:
            raise EinetValueError(f"{path} fails its checksum (SHA-256 {actual[:16]}..., stored {stored[:16]}...): "
                                  f"the file is damaged")
    return cast("dict[str, Any]", state)  # a dict: only a dict has a "version"


def _checked_spec(path: str | os.PathLike[str], state: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(zoo name, keyword arguments) from a checkpoint's spec: a known name, known keys, bounded values."""
    from ..models.zoo import ZOO

    spec = state.get("spec")
    if not isinstance(spec, dict):
        raise EinetValueError(f"{path} has no model spec (a dict naming the zoo model and its sizes)")
    if "name" not in spec:
        raise EinetValueError(f"{path} does not say which model it holds (no spec name)")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if not isinstance(name, str) or name not in ZOO:
        raise EinetValueError(f"{path}: unknown model {name!r} in its spec: expected one of {', '.join(ZOO)}")
    allowed = _SPEC_KEYS + (_MSDNET_SPEC_KEYS if name.startswith("msdnet") else ())
    unknown = sorted(str(key) for key in kwargs if key not in allowed)
    if unknown:
        raise EinetValueError(f"{path}: unknown spec key {unknown[0]!r} for {name}: expected {', '.join(allowed)}")
    for key, (low, high) in _SPEC_INTEGERS.items():
        if key in kwargs and not (type(kwargs[key]) is int and low <= kwargs[key] <= high):
            raise EinetValueError(f"{path}: spec {key} must be an integer in [{low}, {high}], got {kwargs[key]!r}")
    width = kwargs.get("width", 1.0)
    if type(width) not in (int, float) or not 0 < width <= _SPEC_MAX_WIDTH:  # NaN fails too
        raise EinetValueError(f"{path}: spec width must be a number in (0, {_SPEC_MAX_WIDTH}], got {width!r}")
    if kwargs.get("exit_head", "paper") not in EXIT_HEADS:
        raise EinetValueError(f"{path}: spec exit_head must be one of {', '.join(EXIT_HEADS)}, got "
                              f"{kwargs['exit_head']!r}")
    pools = kwargs.get("exit_pools")
    if pools is not None and not (kwargs.get("exit_head") == "light" and isinstance(pools, list)
                                  and len(pools) <= _MAX_EXITS
                                  and all(is_light_pool(p) for p in pools)):
        raise EinetValueError(f"{path}: spec exit_pools must be a list of whole numbers in 1..{MAX_LIGHT_POOL}, "
                              "one per "
                              f"light exit (exit_head 'light'), got {pools!r}")
    return name, kwargs


def _checked_converted_spec(path: str | os.PathLike[str], spec: Mapping[str, Any]) -> dict[str, Any]:
    """A converted model's spec, checked: known keys, a constructor name, plain kwargs, bounded exits and shape."""
    unknown = sorted(str(key) for key in spec if key not in _CONVERTED_KEYS)
    if unknown:
        raise EinetValueError(f"{path}: unknown spec key {unknown[0]!r} for a converted model: expected "
                              f"{', '.join(_CONVERTED_KEYS)}")
    constructor = spec.get("constructor")
    if not isinstance(constructor, str) or not 0 < len(constructor) <= _MAX_NAME:
        raise EinetValueError(f"{path}: a converted model's spec must name its constructor, got {constructor!r}")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or not plain_json(kwargs, _MAX_KWARGS_ITEMS):
        raise EinetValueError(f"{path}: spec kwargs must be a dict of plain JSON values (at most {_MAX_KWARGS_ITEMS})")
    exits = spec.get("exits")
    if exits is not None and not (isinstance(exits, list) and 0 < len(exits) <= _MAX_EXITS and all(
            isinstance(name, str) and 0 < len(name) <= _MAX_NAME for name in exits)):
        raise EinetValueError(f"{path}: spec exits must be None or 1 to {_MAX_EXITS} module names, got {exits!r}")
    shape = spec.get("input_shape")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(type(n) is int and n >= 1 for n in shape)
            and math.prod(shape) <= _MAX_INPUT_SIZE):
        raise EinetValueError(f"{path}: spec input_shape must be 1 to 4 positive sizes of at most {_MAX_INPUT_SIZE} "
                              f"elements in all, got {shape!r}")
    low, high = _SPEC_INTEGERS["num_classes"]
    if not (type(spec.get("num_classes")) is int and low <= spec["num_classes"] <= high):
        raise EinetValueError(f"{path}: spec num_classes must be an integer in [{low}, {high}], "
                              f"got {spec.get('num_classes')!r}")
    return {"constructor": constructor, "kwargs": kwargs, "exits": exits, "input_shape": shape}


def _converted_model(path: str | os.PathLike[str], spec: Mapping[str, Any], device: str,
                     make: Any) -> MultiExitNetwork:
    """The converted network a spec describes, built on `device` ("meta": a skeleton, no memory)."""
    try:
        with torch.device(device):
            model, _ = build_converted(make, spec["kwargs"], torch.zeros(1, *spec["input_shape"]), spec["exits"])
    except ValueError as error:  # ConversionError included
        raise EinetValueError(f"{path}: its spec does not build a converted {spec['constructor']}: {error}") from None
    return model


def _check_tensors(path: str | os.PathLike[str], name: str, stored: Any, expected: Mapping[str, torch.Tensor]) -> None:
    """The checkpoint's model tensors must be exactly the ones the spec's model has: names, shapes, kinds."""
    if not isinstance(stored, Mapping):
        raise EinetValueError(f"{path}: its model state is a {type(stored).__name__}, not a dict of tensors")
    missing = [key for key in expected if key not in stored]
    unexpected = [str(key) for key in stored if key not in expected]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected[:5])}"] if unexpected else [])
        raise EinetValueError(f"{path} does not hold the {name} model its spec names: {'; '.join(parts)}")
    for key, want in expected.items():
        got = stored[key]
        if not isinstance(got, torch.Tensor):
            raise EinetValueError(f"{path}: {key} is not a tensor but a {type(got).__name__}")
        if got.shape != want.shape or got.dtype.is_floating_point != want.dtype.is_floating_point:
            raise EinetValueError(f"{path}: {key} has shape {tuple(got.shape)} ({got.dtype}); the spec's {name} needs "
                                  f"{tuple(want.shape)} ({want.dtype})")


def recorded_split(path: str | os.PathLike[str], state: Mapping[str, Any]) -> HeldOutSplit | None:
    """The held-out split a checkpoint records (None for checkpoints written before splits were)."""
    record = state.get("split")
    if record is None:
        return None
    try:
        return HeldOutSplit.from_dict(record)
    except (TypeError, ValueError) as error:
        raise EinetValueError(f"{path}: {error}") from None


def load_checkpoint(path: str | os.PathLike[str], *, trust_constructor: bool = False,
                    constructor: str | Any | None = None) -> tuple[MultiExitNetwork, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`train`; returns (model, checkpoint).

    Before any model is allocated: the checksum is verified (version 1 files, which have none, load
    unverified), the spec is checked (a known zoo name, known keys, bounded sizes) and the model's
    skeleton, built on the meta device (no memory), must have exactly the file's tensor names and
    shapes, so a file cannot make it allocate more than it holds. Any problem is a ValueError naming
    the file.

    Models converted from a user's constructor (spec name ``"converted"``): the file stores only the
    constructor's *name* (``package.module:callable``), its JSON keyword arguments and the exits;
    never code. Rebuilding the model calls the constructor, which means importing its module, which
    runs that module's code. So it happens only when the caller asks for it:

    - ``constructor="package.module:callable"`` (the CLI's ``--constructor``): that module is
      imported, and only if the file names the same constructor (else a ValueError);
    - ``constructor=<a callable>``: the caller's own function is used, nothing is imported;
    - ``trust_constructor=True``: the module the file names is imported: only for files you trust.

    Without any of them such a checkpoint is refused with a ValueError naming its constructor. The
    constructor runs twice: once on the meta device for the skeleton check, then for real.
    """
    from ..models import zoo

    state = read_checkpoint(Path(path))
    spec = state.get("spec")
    if isinstance(spec, dict) and spec.get("name") == CONVERTED:
        return _load_converted(path, state, trust_constructor, constructor), state
    name, kwargs = _checked_spec(path, state)
    try:
        with torch.device("meta"):
            skeleton = zoo.build(name, **kwargs)
    except (ValueError, TypeError, OverflowError) as error:
        raise EinetValueError(f"{path}: its spec does not build a {name}: {error}") from None
    _check_tensors(path, name, state["model"], skeleton.state_dict())
    model = zoo.build(name, **kwargs)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise EinetValueError(f"{path}: its weights do not fit the {name} model: {error}") from None
    return model.eval(), state


def _load_converted(path: str | os.PathLike[str], state: Mapping[str, Any], trust_constructor: bool,
                    constructor: str | Any | None) -> MultiExitNetwork:
    spec = _checked_converted_spec(path, state["spec"])
    named = spec["constructor"]
    if constructor is None and not trust_constructor:
        raise EinetValueError(f"{path} holds a model converted from {named}; rebuilding it imports that module, which "
                              f"runs its code. If you trust it, pass constructor={named!r} or "
                              "trust_constructor=True to "
                              f"load_checkpoint (einet commands: --constructor {named})")
    if isinstance(constructor, str) and constructor != named:
        raise EinetValueError(f"{path} holds a model converted from {named}, not from {constructor}")
    try:
        make = constructor if constructor is not None and not isinstance(constructor, str) \
            else resolve_constructor(named)
    except ValueError as error:
        raise EinetValueError(f"{path}: {error}") from None
    skeleton = _converted_model(path, spec, "meta", make)
    _check_tensors(path, named, state["model"], skeleton.state_dict())
    model = _converted_model(path, spec, "cpu", make)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise EinetValueError(f"{path}: its weights do not fit the model converted from {named}: {error}") from None
    return model.eval()
