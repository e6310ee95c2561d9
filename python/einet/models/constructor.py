"""A user's network by its constructor's name (``package.module:callable``): resolved (importing its
module runs its code, so only when named), built with JSON keyword arguments, its backbone weights
loaded and converted to a multi-exit network (:func:`einet.models.convert.convert`). Checkpoints and
bundles store the name, never code."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import EinetValueError
from .base import MultiExitNetwork
from .convert import ConversionError, convert

CONVERTED = "converted"  # the spec name of a checkpoint holding a model converted from a user's constructor
_CONSTRUCTOR = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def resolve_constructor(name: str) -> Callable[..., nn.Module]:
    """The callable named ``package.module:attribute`` (e.g. ``mypkg.nets:resnet``).

    This **imports the module**, which runs its code: call it only with a name you chose (or trust).
    The module must be importable (installed, or on ``PYTHONPATH``).
    """
    if not isinstance(name, str) or not _CONSTRUCTOR.match(name):
        raise EinetValueError(f"a constructor is named 'package.module:callable', got {name!r}")
    module_name, _, qualname = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise EinetValueError(f"cannot import {module_name!r} for the constructor {name}: {error}") from None
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise EinetValueError(f"{module_name} has no {qualname!r} (constructor {name})")
        target = getattr(target, part)
    _check_makes_module(name, target)
    return target  # type: ignore[no-any-return]


def _check_makes_module(name: str, target: Any) -> None:
    """Refuse, before calling it, a `target` known not to make a network: a class that is not an
    ``nn.Module``, a built-in function (``os:system``), a function annotated to return something else,
    anything not callable. (A function without an annotation can only be known by calling it.)"""
    if inspect.isclass(target):
        if not issubclass(target, nn.Module):
            raise EinetValueError(f"{name} is the class {target.__qualname__}, not an nn.Module")
        return
    if not callable(target) or inspect.isbuiltin(target) or inspect.ismethoddescriptor(target):
        raise EinetValueError(f"{name} is a {type(target).__name__}, not a class or a function that makes a network")
    try:
        returns = typing.get_type_hints(target).get("return")
    except Exception:  # an annotation that does not resolve says nothing either way
        returns = None
    if inspect.isclass(returns) and not issubclass(returns, nn.Module):
        raise EinetValueError(f"{name} returns a {returns.__qualname__}, not an nn.Module")


def _constructor_name(constructor: str | Callable[..., nn.Module]) -> str:
    if isinstance(constructor, str):
        return constructor
    return f"{getattr(constructor, '__module__', '?')}:{getattr(constructor, '__qualname__', '?')}"


def load_backbone(model: nn.Module, weights: str | os.PathLike[str] | Mapping[str, Any]) -> None:
    """Load the original single-exit network's state_dict (a file read with ``weights_only=True``, or a
    mapping); a file holding ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped."""
    state: Any = weights
    if isinstance(weights, (str, os.PathLike)):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a damaged or foreign file
            raise EinetValueError(f"{weights} is not a readable state_dict: {error}") from None
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping) and not isinstance(state.get(key), torch.Tensor):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise EinetValueError(f"{weights if isinstance(weights, (str, os.PathLike)) else 'the backbone weights'} "
                              f"hold a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as error:
        where = weights if isinstance(weights, (str, os.PathLike)) else "the backbone weights"
        raise EinetValueError(f"{where} do not fit {type(model).__name__}: {error}") from None


def build_converted(constructor: str | Callable[..., nn.Module], kwargs: Mapping[str, Any] | None,
                    example_input: torch.Tensor, exits: Sequence[str] | None = None,
                    backbone_weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                    ) -> tuple[MultiExitNetwork, dict[str, Any]]:
    """(network, spec): ``constructor(**kwargs)``, with `backbone_weights` if given, converted with `exits`.

    `constructor` is a callable or a ``package.module:callable`` name (imported: its code runs). The
    spec (constructor name, kwargs, exits, input shape, classes) is what :func:`einet.training.train`
    stores in a checkpoint so that :func:`einet.formats.checkpoint.load_checkpoint` can rebuild the network;
    `kwargs` must therefore be plain JSON values.
    """
    make = resolve_constructor(constructor) if isinstance(constructor, str) else constructor
    kwargs = dict(kwargs or {})
    try:
        original = make(**kwargs)
    except Exception as error:  # the user's code: any error means these kwargs do not build it
        raise ConversionError(f"{_constructor_name(constructor)}(**{kwargs}) failed: {type(error).__name__}: "
                              f"{error}") from None
    if not isinstance(original, nn.Module):
        raise ConversionError(f"{_constructor_name(constructor)} returned a {type(original).__name__}, not a module")
    if backbone_weights is not None:
        load_backbone(original, backbone_weights)
    network = convert(original, example_input, exits=exits)
    spec = {"name": CONVERTED, "constructor": _constructor_name(constructor), "kwargs": kwargs,
            "exits": None if exits is None else list(exits), "input_shape": list(example_input.shape[1:]),
            "num_classes": int(network.exits[-1](_probe(network, example_input)).shape[1])}
    return network, spec


def _probe(network: MultiExitNetwork, x: torch.Tensor) -> torch.Tensor:
    """The last block's output on x (eval mode, no grad), to read the final exit's class count."""
    was_training = network.training
    network.eval()
    with torch.no_grad():
        h = x
        for i in range(network.num_exits):
            h = network.forward_block(i, h)
    network.train(was_training)
    return h
