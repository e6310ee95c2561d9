"""A network's inference form: the same answers, in less time per block.

Deadlines are in seconds, so every microsecond a block wastes is accuracy lost at every deadline. A
trained network carries what only training needs; its *prepared* form drops it, without changing any
answer beyond float rounding:

- BatchNorm folded into the convolution before it (``y = conv(x) * s + b`` is one convolution with
  scaled weights and a bias): one layer fewer per conv, at batch one a dispatch and a pass over memory;
- dropout and identity layers removed from the sequences that hold them (each a call that does nothing
  at inference);
- each block in the memory layout that runs it faster here: channels_last (NHWC, what oneDNN's
  convolutions prefer on x86) or the default, chosen by timing both on a real input, block and exit
  together, in order (a block's input comes in the layout the block before it chose), not assumed.

The layout choice is this device's: :func:`choose_form` measures it and :class:`InferenceForm` records
it (an ET-profile says which form it timed, so a runtime runs what was timed); :meth:`InferenceForm.apply`
rebuilds it on any copy of the network. Training never sees a prepared network (it is a copy).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from ..errors import EinetValueError
from .base import MultiExitNetwork

FORMS = ("eager", "prepared", "compiled")
_DROPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
VERIFY_TOLERANCE = 1e-4  # relative error of any exit's logits, prepared against eager
SAME_ANSWERS = 0.999  # share of inputs on which every exit answers the same class


@dataclass(frozen=True)
class InferenceForm:
    """How a network is run: ``eager`` (as trained, eval mode), ``prepared`` (BatchNorm folded, dropout
    gone) with each block's layout (True: channels_last; none given: every block in its trained layout),
    or ``compiled`` (the prepared network's blocks and exits as packages: :mod:`einet.models.compiled`)."""

    name: str = "eager"
    channels_last: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in FORMS:
            raise EinetValueError(f"unknown inference form {self.name!r}: expected one of {', '.join(FORMS)}")
        if self.name != "prepared" and any(self.channels_last):
            raise EinetValueError(f"the {self.name} form has no layouts of its own")

    def apply(self, model: MultiExitNetwork) -> MultiExitNetwork:
        """`model` in this form: a prepared copy (the model itself is left as it is), or `model` in eval mode."""
        if self.name == "eager":
            return model.eval()
        if self.name == "compiled":
            raise EinetValueError("a compiled form is loaded from the cache of compiled blocks (einet.models.compiled)")
        if self.channels_last and len(self.channels_last) != model.num_exits:
            raise EinetValueError(f"the form has layouts for {len(self.channels_last)} blocks, the network "
                                  f"{model.num_exits}")
        prepared = fold(model)
        for i, last in enumerate(self.channels_last):
            if last:
                prepared.blocks[i] = ChannelsLast(prepared.blocks[i])
                prepared.exits[i] = _to_channels_last(prepared.exits[i])
        return prepared

    def record(self) -> dict[str, Any]:
        """What an ET-profile's metadata says of the form it timed."""
        return {"name": self.name, "channels_last": list(self.channels_last)}

    @classmethod
    def from_record(cls, record: object) -> InferenceForm:
        """The form an ET-profile recorded; eager when it records none (profiles before forms existed)."""
        if record is None:
            return cls()
        if not (isinstance(record, Mapping) and set(record) == {"name", "channels_last"}
                and isinstance(record["channels_last"], list) and len(record["channels_last"]) <= 100_000
                and all(type(v) is bool for v in record["channels_last"])):
            raise EinetValueError(f"an inference form is a name and one layout flag per block, got {record!r:.120}")
        return cls(record["name"], tuple(record["channels_last"]))


def _to_channels_last(module: nn.Module) -> nn.Module:
    """`module` with its 4-d weights in channels_last (in place)."""
    return cast(nn.Module, module.to(memory_format=torch.channels_last))  # type: ignore[call-overload]


class ChannelsLast(nn.Module):
    """A block run in channels_last: its weights, and its input (a tensor or a list of them), in NHWC."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = _to_channels_last(block)

    def forward(self, h: Any) -> Any:
        if isinstance(h, torch.Tensor):
            return self.block(h.contiguous(memory_format=torch.channels_last) if h.dim() == 4 else h)
        return self.block([t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in h])


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One convolution computing ``bn(conv(x))`` in eval mode (BatchNorm's running statistics)."""
    fused = copy.deepcopy(conv)
    mean, var = cast(torch.Tensor, bn.running_mean), cast(torch.Tensor, bn.running_var)  # (tracked: _foldable)
    scale = bn.weight.detach() if bn.affine else torch.ones_like(var)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(mean)
    factor = scale / torch.sqrt(var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
    fused.weight = nn.Parameter(conv.weight.detach() * factor.reshape(-1, 1, 1, 1), requires_grad=False)
    fused.bias = nn.Parameter((bias - mean) * factor + shift, requires_grad=False)
    return fused


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and bn.num_features == conv.out_channels)


def _fold_sequence(sequence: nn.Sequential) -> nn.Sequential:
    """`sequence` with each Conv2d-BatchNorm2d pair folded and dropout / identity layers left out."""
    layers: list[nn.Module] = []
    for layer in sequence:
        if isinstance(layer, _DROPPED):
            continue
        if layers and _foldable(layers[-1], layer):
            layers[-1] = _folded_conv(layers[-1], layer)  # type: ignore[arg-type]
        else:
            layers.append(layer)
    return nn.Sequential(*layers) if layers else nn.Sequential(nn.Identity())


def _fold_graph(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A traced module (what einet's converter makes) with each conv-BatchNorm pair folded (where the conv,
    called once, feeds only the BatchNorm) and dropout / identity calls removed."""
    folded = copy.deepcopy(module)
    modules = dict(folded.named_modules())
    calls = [node for node in folded.graph.nodes if node.op == "call_module"]
    times_called = {str(node.target): sum(str(other.target) == str(node.target) for other in calls) for node in calls}
    for node in calls:
        layer, source = modules[str(node.target)], node.args[0] if node.args else None
        if isinstance(layer, _DROPPED):
            node.replace_all_uses_with(source)
        elif (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1
              and times_called[str(source.target)] == 1 and _foldable(modules[str(source.target)], layer)):
            folded.add_submodule(str(source.target), _folded_conv(modules[str(source.target)], layer))
            node.replace_all_uses_with(source)
        else:
            continue
        folded.graph.erase_node(node)
    folded.graph.lint()
    folded.delete_all_unused_submodules()
    folded.recompile()
    return folded


def _fold_tree(module: nn.Module) -> nn.Module:
    """`module` with every sequence and traced graph inside it folded (children first), in place."""
    for name, child in list(module.named_children()):
        setattr(module, name, _fold_tree(child))
    if type(module) is nn.Sequential:
        return _fold_sequence(module)
    if isinstance(module, torch.fx.GraphModule):
        return _fold_graph(module)
    return module


def fold(model: MultiExitNetwork) -> MultiExitNetwork:
    """A copy of `model` in eval mode with BatchNorm folded and dropout gone, every block and exit."""
    prepared = copy.deepcopy(model).eval()
    for i in range(prepared.num_exits):
        prepared.blocks[i] = _fold_tree(prepared.blocks[i])
        prepared.exits[i] = _fold_tree(prepared.exits[i])
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    return prepared


def _median_seconds(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def choose_form(model: MultiExitNetwork, example: torch.Tensor, repeats: int = 10, rounds: int = 5,
                margin: float = 0.05) -> InferenceForm:
    """The prepared form of `model` with each block's layout chosen by timing, on `example` (one input,
    [1, ...]) in this thread with its torch settings: block and exit together, the block's input in the
    layout the block before it chose, the two layouts alternated over `rounds` (each the median of
    `repeats`). channels_last only where it is faster by more than `margin` in the median round: a block
    keeps the layout it was trained in unless the other one is measurably better."""
    folded = fold(model)
    layouts: list[bool] = []
    with torch.inference_mode():
        h: Any = example
        for i in range(folded.num_exits):
            block, branch = folded.blocks[i], folded.exits[i]
            options = {False: (block, branch), True: (ChannelsLast(copy.deepcopy(block)),
                                                      _to_channels_last(copy.deepcopy(branch)))}
            timings: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds + 1):  # the first round warms up
                for last, (b, e) in options.items():
                    timings[last].append(_median_seconds(lambda b=b, e=e, h=h: e(b(h)), repeats))
            median = {last: sorted(times[1:])[rounds // 2] for last, times in timings.items()}
            last = median[True] < (1 - margin) * median[False]
            layouts.append(last)
            h = options[last][0](h)
    return InferenceForm("prepared", tuple(layouts))


def verify(eager: MultiExitNetwork, prepared: MultiExitNetwork, inputs: torch.Tensor,
           tolerance: float = VERIFY_TOLERANCE, same_answers: float = SAME_ANSWERS, one_at_a_time: bool = False,
           ) -> float:
    """The largest relative error of any exit's logits, prepared against eager, over `inputs` (a batch, run
    `one_at_a_time` for a network fixed to a batch of one); ValueError when it exceeds `tolerance` or fewer
    than `same_answers` of an exit's answers (argmax) agree (a near tie may flip under float rounding)."""
    with torch.inference_mode():
        worst = 0.0
        outputs = ([torch.cat(logits) for logits in zip(*(prepared(x[None]) for x in inputs))] if one_at_a_time
                   else prepared(inputs))
        for k, (a, b) in enumerate(zip(eager.eval()(inputs), outputs)):
            error = float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))
            agree = float((a.argmax(1) == b.argmax(1)).float().mean())
            worst = max(worst, error)
            if error > tolerance or agree < same_answers:
                raise EinetValueError(f"the prepared form differs from the network at exit {k + 1}: relative error "
                                      f"{error:.2e} (at most {tolerance:.0e}), answers agree on {100 * agree:.2f}% "
                                      f"(at least {100 * same_answers:.1f}%)")
    return worst
