"""Turn a single-exit CNN into a fine-grained multi-exit network.

The model is traced with torch.fx (an ``nn.Sequential`` or any traceable
module, residual networks included). It is cut after each conv layer's region
at the last point where exactly one tensor is live, so that a cut never splits
a residual block; the part after the last feature map (pooling, flatten, fully
connected layers) becomes the last exit, so that exit reproduces the original
model exactly with the original weights. Every other cut gets a new
:class:`~einet.models.base.Branch`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.fx.passes.split_module import split_module

from .base import Branch, MultiExitNetwork


class ConversionError(ValueError):
    """The model cannot be turned into a multi-exit network; the message says why."""


def _is_conv(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], nn.modules.conv._ConvNd)
    return node.op == "call_function" and node.target in (torch.conv2d, nn.functional.conv2d)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def cut_points(traced: fx.GraphModule) -> list[fx.Node]:
    """The nodes after which the network is cut: one per conv region, where a single tensor is live."""
    modules = dict(traced.named_modules())
    nodes = [n for n in traced.graph.nodes if n.op != "get_attr"]  # attributes are not activations
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position.get(u, len(nodes)) for u in n.users), default=position[n]) for n in nodes}
    single = []
    live: set[fx.Node] = set()
    for k, node in enumerate(nodes):
        live = {n for n in live if last_use[n] > k}
        if last_use[node] > k:
            live.add(node)
        shape = _shape(node)
        single.append(live == {node} and node.op not in ("placeholder", "output") and shape is not None
                      and len(shape) == 4)
    convs = [k for k, n in enumerate(nodes) if _is_conv(n, modules)]
    if not convs:
        raise ConversionError("the model has no conv layers to cut after")
    bounds = [*convs[1:], len(nodes)]
    cuts = []
    for start, stop in zip(convs, bounds):
        candidates = [k for k in range(start, stop) if single[k]]
        if candidates and (not cuts or candidates[-1] > cuts[-1]):
            cuts.append(candidates[-1])
    if not cuts:
        raise ConversionError("no point after a conv layer where a single feature map is live")
    return [nodes[k] for k in cuts]


def convert(model: nn.Module, example_input: torch.Tensor, num_classes: int | None = None,
            **branch_options: Any) -> MultiExitNetwork:
    """A multi-exit network with the weights of `model`, whose last exit equals `model`'s output.

    `example_input` (one batch) is used to trace shapes; `branch_options` go to
    :class:`Branch` (``hidden``, ``pool_in``, ``pool_out``, ``conv_channels``).
    """
    try:
        traced = fx.symbolic_trace(model)
    except Exception as error:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise ConversionError(f"cannot trace {type(model).__name__} with torch.fx: {error}") from None
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model must take exactly one input, it takes {len(placeholders)}")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ShapeProp(traced).propagate(example_input)
        reference = model(example_input)
    model.train(was_training)
    if not isinstance(reference, torch.Tensor) or reference.dim() != 2:
        raise ConversionError("the model must return one tensor of logits [batch, classes]")
    num_classes = num_classes or int(reference.shape[1])
    cuts = cut_points(traced)
    order = {n: i for i, n in enumerate(traced.graph.nodes)}
    cut_positions = [order[n] for n in cuts]

    def partition(node: fx.Node) -> int:
        return sum(1 for c in cut_positions if c < order[node])

    split = split_module(traced, model, partition)
    parts = [getattr(split, f"submod_{i}") for i in range(len(cuts) + 1)]
    if len(parts[-1].graph.find_nodes(op="placeholder")) != 1:
        raise ConversionError("the part after the last feature map does not take a single tensor")
    blocks = parts[:-1]
    exits: list[nn.Module] = [Branch(_shape(c)[1], num_classes, **branch_options) for c in cuts[:-1]]  # type: ignore[index]
    exits.append(parts[-1])
    return MultiExitNetwork(blocks, exits)
