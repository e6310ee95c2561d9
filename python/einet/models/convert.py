"""Turn a single-exit CNN or vision transformer into a fine-grained multi-exit network.

The model is traced with torch.fx (an ``nn.Sequential`` or any traceable
module, residual networks included). A CNN is cut after each conv layer's region
at the last point where exactly one tensor is live, so that a cut never splits
a residual block; a transformer (blocks of an ``nn.Sequential`` or
``nn.ModuleList`` passing tokens [batch, tokens, dim], :mod:`.convert_tokens`)
is cut after each block. The part after the last cut (pooling, flatten, norm,
fully connected layers) becomes the last exit, so that exit reproduces the
original model exactly with the original weights. Every other cut gets a new
exit branch: :class:`~einet.models.base.Branch` on a feature map,
:class:`~einet.models.convert_tokens.TokenBranch` on tokens.

Or cut after modules you name (``exits=["layer2", "layer3"]``): each named
module is traced as one leaf, and the network is cut right after it; the part
after the last feature map (or token tensor) stays the final exit. Anything that
cannot be traced or cut, or whose result does not reproduce the original, is a
:class:`ConversionError`; so is finding fewer than two cut points (a network with
one exit has no elasticity) unless ``single_exit="warn"`` accepts it.

:func:`build_converted` does the whole path from a constructor named
``package.module:callable`` (plus keyword arguments) to a converted network and
the spec a checkpoint stores to rebuild it (see
:func:`einet.formats.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.fx.passes.split_module import split_module

from ..errors import EinetTypeError, EinetValueError
from .base import Branch, MultiExitNetwork
from .convert_tokens import TokenBranch, block_ends, block_sequences, token_pooling


class ConversionError(EinetValueError):
    """The model cannot be turned into a multi-exit network; the message says why."""


def _is_conv(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A conv layer, or a module traced as one call (see :func:`trace`) that holds one."""
    if node.op == "call_module":
        return any(isinstance(m, nn.modules.conv._ConvNd) for m in modules[str(node.target)].modules())
    return node.op == "call_function" and node.target in (torch.conv2d, nn.functional.conv2d)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _dims(node: fx.Node) -> int:
    """How many dimensions `node`'s tensor has: 4 for a feature map, 3 for tokens (0: not a tensor)."""
    return len(_shape(node) or ())


def _single_live(traced: fx.GraphModule) -> tuple[list[fx.Node], list[bool]]:
    """The graph's activation nodes, and for each whether it is a feature map [B, C, H, W] or tokens
    [B, N, D] that is the only tensor live after it runs (a point where the network can be cut)."""
    nodes = [n for n in traced.graph.nodes if n.op != "get_attr"]  # attributes are not activations
    position = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((position.get(u, len(nodes)) for u in n.users), default=position[n]) for n in nodes}
    single = []
    live: set[fx.Node] = set()
    for k, node in enumerate(nodes):
        live = {n for n in live if last_use[n] > k}
        if last_use[node] > k:
            live.add(node)
        single.append(live == {node} and node.op not in ("placeholder", "output") and _dims(node) in (3, 4))
    return nodes, single


def _conv_cuts(traced: fx.GraphModule, nodes: list[fx.Node], single: list[bool]) -> list[int]:
    """One cut per conv region, at its last point where a single feature map is live."""
    modules = dict(traced.named_modules())
    convs = [k for k, n in enumerate(nodes) if _is_conv(n, modules)]
    cuts: list[int] = []
    for start, stop in zip(convs, [*convs[1:], len(nodes)]):
        candidates = [k for k in range(start, stop) if single[k] and _dims(nodes[k]) == 4]
        if candidates and (not cuts or candidates[-1] > cuts[-1]):
            cuts.append(candidates[-1])
    return cuts


def cut_points(model: nn.Module, traced: fx.GraphModule) -> list[fx.Node]:
    """The nodes after which `model` (`traced`) is cut, where a single tensor is live: after each block
    that passes tokens (a transformer), else one per conv region. Maybe fewer than two: see convert."""
    nodes, single = _single_live(traced)
    blocks = {name for children in block_sequences(model).values() for name in children}
    tokens = [k for k in block_ends(nodes, blocks) if single[k] and _dims(nodes[k]) == 3]
    return [nodes[k] for k in (tokens or _conv_cuts(traced, nodes, single))]


def _searched(model: nn.Module, traced: fx.GraphModule, names: list[str] | None) -> str:
    """Where the cut points were looked for, for a message: the named modules, or the conv layers and
    the block sequences the automatic cuts look at."""
    if names is not None:
        return f"after the modules named in exits ({', '.join(names)}) and the last feature map or tokens"
    modules = dict(traced.named_modules())
    convs = [str(n.target) if n.op == "call_module" else n.name for n in traced.graph.nodes if _is_conv(n, modules)]
    sequences = [f"{name or type(model).__name__} ({len(children)} blocks)"
                 for name, children in block_sequences(model).items()]
    return (f"looked at {'conv layers ' + ', '.join(convs) if convs else 'no conv layers'}; "
            f"{'block sequences ' + ', '.join(sequences) if sequences else 'no Sequential or ModuleList of blocks'}")


SINGLE_EXIT = ("refuse", "warn")


def _check_enough_cuts(cuts: list[fx.Node], single_exit: str, searched: str, model_name: str) -> None:
    """Refuse (or, with ``single_exit="warn"``, warn about) fewer than two cut points: the network would
    have one exit, exact but with no elasticity, which a caller would otherwise not notice."""
    if len(cuts) >= 2:
        return
    found = f"found {len(cuts)} cut point{'' if len(cuts) == 1 else 's'} in {model_name} ({searched})"
    if single_exit == "warn":
        warnings.warn(f"{found}: the converted network has a single exit, no elasticity", stacklevel=4)
        return
    raise ConversionError(f"{found}: a multi-exit network needs at least two; name the modules to cut after with "
                          f"exits=[...], or pass single_exit='warn' to accept a single exit")


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer, with the named modules traced as single calls (leaves): the cuts after them."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.leaves or super().is_leaf_module(m, module_qualified_name)


def _optional_defaults(module: nn.Module) -> dict[str, Any]:
    """The defaults of `module.forward`'s parameters after its input: traced as constants. A parameter
    without a default (a second input) is left to fail: a network takes one input."""
    parameters = list(inspect.signature(module.forward).parameters.values())[1:]
    return {p.name: p.default for p in parameters
            if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}


def _traced_graph(module: nn.Module, leaves: set[str]) -> fx.Graph:
    """`module`'s graph (`leaves`: qualified names traced as single calls), optional arguments at their
    defaults and gone from the graph: fx keeps a placeholder and an assertion for each, which nothing
    else may read."""
    concrete = _optional_defaults(module)
    graph = _LeafTracer(leaves).trace(module, concrete_args=concrete or None)
    inputs = [node for node in graph.nodes if node.op == "placeholder"][1:]
    if len(inputs) != len(concrete):
        return graph  # a second input without a default: refused by the caller
    dead = set(inputs)
    for node in graph.nodes:
        if any(arg in dead for arg in node.all_input_nodes):
            dead.add(node)
    for node in dead:
        if any(user not in dead for user in node.users) or (node.op != "placeholder" and node.users == {}
                                                          and node.target not in _ASSERTIONS):
            raise EinetTypeError(f"its forward uses its optional argument {inputs[0].target!r} beyond checking it")
    for node in reversed(list(graph.nodes)):
        if node in dead:
            graph.erase_node(node)
    return graph


_ASSERTIONS = {torch._assert, getattr(fx._symbolic_trace, "_assert_is_none", None)} - {None}


def trace(model: nn.Module, leaves: set[str]) -> fx.GraphModule:
    """`model` as a torch.fx graph, the modules named in `leaves` traced as single calls.

    A submodule whose own forward cannot be traced (Python control flow on tensor values, calls fx
    cannot follow) is traced as one call instead, as timm's feature extraction does, rather than
    refusing the whole network; it then runs whole inside one block. The network's own forward
    must trace. Optional arguments of any forward are traced at their defaults."""
    try:
        return fx.GraphModule(model, _traced_graph(model, leaves), type(model).__name__)
    except Exception as error:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        first = error
    untraceable: set[str] = set()
    for name, module in model.named_modules():
        if not name or name in leaves or any(name.startswith(leaf + ".") for leaf in leaves | untraceable):
            continue
        children = {child for child, _ in module.named_children()}
        try:
            _traced_graph(module, children)  # its own forward, its children as single calls
        except Exception:
            untraceable.add(name)
    if untraceable:
        try:
            return fx.GraphModule(model, _traced_graph(model, leaves | untraceable), type(model).__name__)
        except Exception as error:
            first = error
    raise ConversionError(f"cannot trace {type(model).__name__} with torch.fx: {first}") from None


def _check_exit_names(model: nn.Module, exits: Sequence[str]) -> list[str]:
    if isinstance(exits, str) or not all(isinstance(name, str) for name in exits):
        raise ConversionError(f"exits must be a list of module names, got {exits!r}")
    names = list(exits)
    if not names:
        raise ConversionError("exits is empty: name at least one module (or pass None for the automatic cuts)")
    modules = dict(model.named_modules())
    for name in names:
        if not name or name not in modules:
            children = ", ".join(child for child, _ in model.named_children())
            raise ConversionError(f"{type(model).__name__} has no module named {name!r} (its children: {children})")
    if len(set(names)) != len(names):
        raise ConversionError(f"an exit is named twice in {names}")
    for outer in names:
        for inner in names:
            if inner.startswith(outer + "."):
                raise ConversionError(f"exit {inner!r} lies inside exit {outer!r}: name modules that follow each other")
    return names


def _named_cuts(traced: fx.GraphModule, names: list[str]) -> list[fx.Node]:
    """The call of each named module (in order, each where only its output is live), then the last
    feature map (or token tensor), after which the original head remains."""
    nodes, single = _single_live(traced)
    index = {n: k for k, n in enumerate(nodes)}
    cuts: list[fx.Node] = []
    for name in names:
        calls = [n for n in nodes if n.op == "call_module" and n.target == name]
        if len(calls) != 1:
            raise ConversionError(f"module {name!r} runs {len(calls)} times in forward; an exit must follow a module "
                                  f"that runs exactly once")
        node = calls[0]
        if not single[index[node]]:
            shape = _shape(node)
            if _dims(node) not in (3, 4):
                raise ConversionError(f"module {name!r} returns {shape or 'no tensor'}, not a feature map [batch, "
                                      f"channels, height, width] or tokens [batch, tokens, dim] that an exit "
                                      f"branch can read")
            raise ConversionError(f"cutting after {name!r} would split the network: other tensors (a skip "
                                  f"connection?) are still live there")
        if cuts and index[node] <= index[cuts[-1]]:
            raise ConversionError(f"exits must be named in the order the model runs them: {name!r} runs before "
                                  f"{cuts[-1].target!r}")
        cuts.append(node)
    last = max(k for k, ok in enumerate(single) if ok)  # single[index[cuts[0]]] holds: there is one
    if last > index[cuts[-1]]:
        cuts.append(nodes[last])
    return cuts


def _attribute(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _own_attributes(part: fx.GraphModule, traced: fx.GraphModule, persistent: set[str]) -> None:
    """split_module hands the parameters and buffers a graph reads directly (a functional layer norm's
    weight, a layer scale) to each part as extra inputs; make them the part's own attributes instead
    (the same tensors, shared with the original), so that every part takes one activation."""
    attributes = {n.name: str(n.target) for n in traced.graph.nodes if n.op == "get_attr"}
    placeholders = list(part.graph.find_nodes(op="placeholder"))
    body = next(n for n in part.graph.nodes if n.op != "placeholder")
    for node in placeholders:
        target = attributes.get(str(node.target))
        if target is None:
            continue
        value = _attribute(traced, target)
        if not isinstance(value, torch.Tensor):
            continue
        name = "attr_" + target.replace(".", "_")
        while hasattr(part, name):
            name += "_"
        if isinstance(value, nn.Parameter):
            part.register_parameter(name, value)
        else:
            part.register_buffer(name, value, persistent=target in persistent)
        with part.graph.inserting_before(body):
            attribute = part.graph.get_attr(name)
        attribute.meta = dict(node.meta)
        node.replace_all_uses_with(attribute)
        part.graph.erase_node(node)
    part.recompile()


def convert(model: nn.Module, example_input: torch.Tensor, num_classes: int | None = None,
            exits: Sequence[str] | None = None, single_exit: str = "refuse", **branch_options: Any) -> MultiExitNetwork:
    """A multi-exit network with the weights of `model`, whose last exit equals `model`'s output.

    `example_input` (one batch) is used to trace shapes and to check the result. `exits` names the
    modules to cut after (``model.named_modules()`` names, in the order they run; each must run
    once and leave only its output live): one exit branch after each, then the original head.
    None: the automatic cuts (after each transformer block, else one per conv region).
    `branch_options` go to :class:`Branch`, the exits on feature maps (``hidden``, ``pool_in``,
    ``pool_out``, ``conv_channels``); exits on tokens are a :class:`TokenBranch`.

    Fewer than two cut points (one exit: no elasticity) is a :class:`ConversionError` naming what was
    found and where it was looked for; ``single_exit="warn"`` accepts it with a warning instead.
    Any other failure (untraceable control flow, a module name that is not there, a cut that would
    split a skip connection, a network whose last exit does not reproduce the original) is a
    :class:`ConversionError` saying why. On the meta device (``example_input.is_meta``) the network
    is built as a shape-only skeleton and the numeric check is skipped.
    """
    if single_exit not in SINGLE_EXIT:
        raise ConversionError(f"single_exit must be one of {', '.join(SINGLE_EXIT)}, got {single_exit!r}")
    names = _check_exit_names(model, exits) if exits is not None else None
    traced = trace(model, set(names or ()))
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model must take exactly one input, it takes {len(placeholders)}")
    was_training = model.training
    try:
        network = _convert_traced(model, traced, example_input, num_classes, names, single_exit, branch_options)
    except ConversionError:
        raise
    except Exception as error:  # anything torch or fx raise on a graph they cannot run or split
        raise ConversionError(f"cannot convert {type(model).__name__}: {type(error).__name__}: {error}") from None
    finally:
        model.train(was_training)
    return network.train(was_training)


def _convert_traced(model: nn.Module, traced: fx.GraphModule, example_input: torch.Tensor, num_classes: int | None,
                    names: list[str] | None, single_exit: str, branch_options: dict[str, Any]) -> MultiExitNetwork:
    model.eval()
    with torch.no_grad():
        ShapeProp(traced).propagate(example_input)
        reference = model(example_input)
    if not isinstance(reference, torch.Tensor) or reference.dim() != 2:
        raise ConversionError("the model must return one tensor of logits [batch, classes]")
    num_classes = num_classes or int(reference.shape[1])
    cuts = cut_points(model, traced) if names is None else _named_cuts(traced, names)
    _check_enough_cuts(cuts, single_exit, _searched(model, traced, names), type(model).__name__)
    order = {n: i for i, n in enumerate(traced.graph.nodes)}
    cut_positions = [order[n] for n in cuts]

    def partition(node: fx.Node) -> int:
        return sum(1 for c in cut_positions if c < order[node])

    split = split_module(traced, model, partition)
    parts = [getattr(split, f"submod_{i}") for i in range(len(cuts) + 1)]
    persistent = set(traced.state_dict())
    for part in parts:
        _own_attributes(part, traced, persistent)
    if len(parts[-1].graph.find_nodes(op="placeholder")) != 1:
        raise ConversionError("the part after the last feature map does not take a single tensor")
    if any(len(part.graph.find_nodes(op="placeholder")) != 1 for part in parts[:-1]):
        raise ConversionError("a block between two cuts does not take a single tensor")
    blocks = parts[:-1] or [nn.Identity()]  # no cut point (accepted with single_exit="warn"): one exit, the model
    network = MultiExitNetwork(blocks, [*_exit_branches(traced, cuts, num_classes, branch_options), parts[-1]]).eval()
    with torch.no_grad():
        outputs = network(example_input)
    if any(o.shape != (example_input.shape[0], num_classes) for o in outputs):
        raise ConversionError(f"the exits return {[tuple(o.shape) for o in outputs]}, not [batch, {num_classes}]")
    if not example_input.is_meta and not torch.allclose(outputs[-1], reference, rtol=1e-4, atol=1e-5):
        difference = float((outputs[-1] - reference).abs().max())
        raise ConversionError(f"the converted network's last exit does not reproduce the original (max difference "
                              f"{difference:.3g})")
    return network


def _exit_branches(traced: fx.GraphModule, cuts: list[fx.Node], num_classes: int,
                   branch_options: dict[str, Any]) -> list[nn.Module]:
    """A new exit branch after each cut but the last (whose exit is the model's own head): a
    :class:`Branch` on a feature map, a :class:`TokenBranch` pooling as the model's own head does on tokens."""
    if branch_options and any(_dims(cut) == 3 for cut in cuts[:-1]):
        raise ConversionError(f"branch options ({', '.join(sorted(branch_options))}) shape the exits on feature maps; "
                              f"this model's exits read tokens")
    nodes = list(traced.graph.nodes)
    after_last_cut = nodes[nodes.index(cuts[-1]) + 1:] if cuts else []
    pooling = token_pooling(next((n for n in after_last_cut if _dims(n) == 2), None))
    exits: list[nn.Module] = []
    for cut in cuts[:-1]:
        shape = _shape(cut) or ()  # a cut is a feature map or tokens: see _single_live
        exits.append(Branch(shape[1], num_classes, **branch_options) if len(shape) == 4
                     else TokenBranch(shape[2], num_classes, pooling))
    return exits
