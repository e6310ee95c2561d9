"""Reading predictor files without torch: the checks, the native predictor and its rule.

A predictor file (written by :func:`write_predictor`) holds dense layers and a
header: target, sizes and the output rule it was fitted for. Everything is checked before
anything is built: the header's values (types and bounds) and every array's presence, shape,
dtype (floating point) and values (finite as float32), so a file cannot make a reader allocate
more than the arrays it holds. :class:`ProfileFormatError` names the file and the problem.
Numpy only: `einet evaluate` and `einet report` plan with the native predictor, no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import EinetValueError
from ..planner import NativePredictor
from ..rules import AnswerRule
from ..signals import check_signal
from ..validation import check_memory, number
from .npz import ProfileFormatError, read_arrays, write_arrays

if TYPE_CHECKING:
    from typing_extensions import TypeGuard

TARGETS = ("confidence", "correctness")


class ExportablePredictor(Protocol):
    """What a predictor file is written from (:class:`einet.predictor.ConfidencePredictor`, torch)."""

    num_exits: int
    hidden: tuple[int, ...]
    target: str
    rule: AnswerRule
    signal: str

    def export(self) -> tuple[list[np.ndarray], list[np.ndarray]]: ...


def write_predictor(path: str | os.PathLike[str], model: ExportablePredictor) -> Path:
    """Write a predictor's weights and header in einet's file format (no pickle)."""
    weights, biases = model.export()
    arrays = {f"weight{k}": w for k, w in enumerate(weights)} | {f"bias{k}": b for k, b in enumerate(biases)}
    meta = {"target": model.target, "hidden": list(model.hidden), "num_exits": model.num_exits,
            "layers": len(weights), "rule": model.rule.record(), "signal": model.signal}
    return write_arrays(path, "predictor", arrays, meta)


@dataclass(frozen=True)
class PredictorFile:
    """A checked predictor file: sizes, target, rule, and each dense layer's (weight [out, in], bias)."""

    num_exits: int
    hidden: list[int]
    target: str
    rule: AnswerRule
    layers: list[tuple[np.ndarray, np.ndarray]]
    signal: str = "confidence"  # what it reads per observed exit (einet.signals)

    def to_native(self) -> NativePredictor:
        return NativePredictor([w for w, _ in self.layers], [b for _, b in self.layers], self.target == "correctness")


def _predictor_rule(path: str | os.PathLike[str], meta: dict[str, Any], num_exits: int) -> AnswerRule:
    """The output rule in a predictor header (files without one: rule ``latest``)."""
    record = meta.get("rule", {"name": "latest"})
    try:
        return AnswerRule.from_record(record, num_exits)
    except (TypeError, ValueError) as error:
        raise ProfileFormatError(f"{path}: bad predictor header: rule {record!r}: {error}") from None


# Bounds on a predictor file's header. Every array must also be in the file with the shape the
# header implies, so a model built from a file is never larger than the file's own arrays.
MAX_PREDICTOR_EXITS = 1024
MAX_PREDICTOR_WIDTH = 16384
MAX_PREDICTOR_HIDDEN_LAYERS = 64


# A weight in training: itself, its gradient and Adam's two moments (float32), plus the float64
# copy the native export makes.
_BYTES_PER_WEIGHT = 4 * 4 + 8


def check_predictor_size(num_exits: int, hidden: Sequence[int]) -> None:
    """The bounds a predictor must meet to be written and read back, and its training memory
    (:func:`einet.validation.check_memory`): checked before any layer is allocated."""
    number("num_exits", num_exits, 1, MAX_PREDICTOR_EXITS, integer=True)
    if len(hidden) > MAX_PREDICTOR_HIDDEN_LAYERS:
        raise EinetValueError(f"at most {MAX_PREDICTOR_HIDDEN_LAYERS} hidden layers, got {len(hidden)}")
    for h in hidden:
        number("a hidden layer size", h, 1, MAX_PREDICTOR_WIDTH, integer=True)
    sizes = [2 * num_exits, *hidden, num_exits]
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    check_memory(_BYTES_PER_WEIGHT * weights, f"a predictor with hidden layers {list(hidden)}")


def _predictor_shapes(path: str | os.PathLike[str],
                      meta: dict[str, Any]) -> tuple[int, list[int], str, dict[str, tuple[int, ...]]]:
    """(num_exits, hidden, target, {array name: shape}) from a predictor header, checked for types and bounds."""
    def bad(what: str, value: object) -> ProfileFormatError:
        return ProfileFormatError(f"{path}: bad predictor header: {what}, got {value!r}")

    def whole(value: object, low: int, high: int) -> TypeGuard[int]:
        return type(value) is int and low <= value <= high  # JSON numbers: no bools, no floats

    num_exits, hidden, target, layers = (meta.get(k) for k in ("num_exits", "hidden", "target", "layers"))
    if not whole(num_exits, 1, MAX_PREDICTOR_EXITS):
        raise bad(f"num_exits must be an integer in [1, {MAX_PREDICTOR_EXITS}]", num_exits)
    if (not isinstance(hidden, list) or len(hidden) > MAX_PREDICTOR_HIDDEN_LAYERS
            or not all(whole(h, 1, MAX_PREDICTOR_WIDTH) for h in hidden)):
        raise bad(f"hidden must be a list of at most {MAX_PREDICTOR_HIDDEN_LAYERS} integers in "
                  f"[1, {MAX_PREDICTOR_WIDTH}]", hidden)
    if not isinstance(target, str) or target not in TARGETS:
        raise bad(f"target must be one of {TARGETS}", target)
    if not whole(layers, len(hidden) + 1, len(hidden) + 1):
        raise bad(f"layers must be {len(hidden) + 1} (the hidden layers and the output)", layers)
    sizes = [2 * num_exits, *hidden, num_exits]
    shapes: dict[str, tuple[int, ...]] = {}
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"weight{k}"] = (fan_out, fan_in)
        shapes[f"bias{k}"] = (fan_out,)
    return num_exits, hidden, target, shapes


def read_predictor(path: str | os.PathLike[str]) -> PredictorFile:
    """Read and check a predictor file (see the module docstring)."""
    arrays, meta = read_arrays(path, "predictor")
    num_exits, hidden, target, shapes = _predictor_shapes(path, meta)
    rule = _predictor_rule(path, meta, num_exits)
    unexpected = sorted(set(arrays) - set(shapes))
    if unexpected:
        raise ProfileFormatError(f"{path}: unexpected array {unexpected[0]!r} in a predictor file")
    limit = float(np.finfo(np.float32).max)
    state = {}
    for name, shape in shapes.items():
        array = arrays.get(name)
        if array is None:
            raise ProfileFormatError(f"{path} misses the array {name!r}")
        if array.shape != shape:
            raise ProfileFormatError(f"{path}: {name} must have shape {shape}, got {array.shape}")
        if array.dtype.kind != "f":
            raise ProfileFormatError(f"{path}: {name} must be floating-point, got {array.dtype}")
        values = np.asarray(array, dtype=np.float64)  # native byte order
        if not np.all(np.abs(values) <= limit):  # NaN fails too
            raise ProfileFormatError(f"{path}: {name} must be finite (as float32)")
        state[name] = values
    layers = [(state[f"weight{k}"], state[f"bias{k}"]) for k in range(len(hidden) + 1)]
    signal = meta.get("signal", "confidence")
    try:
        check_signal(signal, rule.name, target)
    except (TypeError, ValueError) as error:
        raise ProfileFormatError(f"{path}: bad predictor header: {error}") from None
    return PredictorFile(num_exits, hidden, target, rule, layers, signal)


def load_native_predictor(path: str | os.PathLike[str]) -> tuple[NativePredictor, AnswerRule]:
    """The native predictor in a file and the rule it was fitted for, without torch."""
    checked = read_predictor(path)
    return checked.to_native(), checked.rule
