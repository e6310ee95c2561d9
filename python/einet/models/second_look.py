"""A second look: after its final exit, the network runs again on a flipped copy of the input.

An elastic inference that finishes before its deadline holds its final answer and waits: the time
left is wasted. A fast network (light exits, a small width) finishes well before the deadlines a
user's slower reference would face, and that spare time can buy accuracy: the same network run on
the horizontally flipped input and ensembled with the first pass (test-time augmentation, seen in
training by the standard crop-and-flip augmentation) is right more often than either pass alone.
:func:`with_second_look` returns the network
with the second pass as N more blocks and exits, so the planner, the profiles, the simulator and the
runtime treat it like any other exits: the planner decides which of them to run, rule ``ensemble``
combines the passes (rule ``latest`` would only swap one pass's answer for the other's).

The first pass's blocks hand on the input with their features (a tuple, no copy), so that the
second pass can start from it. Both passes are the base network's own blocks and exits, called
directly (a wrapper module per block would cost a module call, 4-6 us on a CPU, per block and per
exit): no parameters are added and the state dict is the base network's.

A network whose exit d is already as accurate as its final one gains nothing from its blocks
after d: ``depth=d`` runs each pass through its first d blocks only (2d exits), so the second
look starts, and its ensemble pays, that much sooner. Choose d on held-out data
(``einet build`` with ``levers.second_look = [depths]``; measured: experiments/levers/results/second_look_depth.md).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch

from ..errors import EinetTypeError, EinetValueError
from .base import MultiExitNetwork

VIEWS = ("flip",)


class SecondLook(MultiExitNetwork):
    """`model`'s first `depth` blocks and exits (default: all N) on the input, then again on a view of it."""

    def __init__(self, model: MultiExitNetwork, view: str = "flip", depth: int | None = None) -> None:
        if view not in VIEWS:
            raise EinetValueError(f"unknown view {view!r}: expected one of {', '.join(VIEWS)}")
        if not isinstance(model, MultiExitNetwork):
            raise EinetTypeError(f"a second look needs a MultiExitNetwork, got {type(model).__name__}")
        overridden = [name for name in ("forward_block", "forward_exit", "num_exits")
                      if getattr(type(model), name) is not getattr(MultiExitNetwork, name)]
        if overridden:  # its blocks are called directly below: a network that changes how would be run wrongly
            raise EinetValueError(f"a second look runs a network's blocks and exits as MultiExitNetwork does; "
                                  f"{type(model).__name__} overrides {', '.join(overridden)}")
        n = len(model.blocks)
        if depth is None:
            depth = n
        elif isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= n:
            raise EinetValueError(f"depth must be a whole number of blocks in 1..{n}, got {depth!r}")
        depth = int(depth)
        super().__init__(list(model.blocks[:depth]), list(model.exits[:depth]))
        self.view = view
        self.label = f"second look ({view})" if depth == n else f"second look ({view}, depth {depth} of {n})"

    @property
    def num_exits(self) -> int:
        return 2 * len(self.blocks)

    def forward_block(self, i: int, h: Any) -> Any:
        n = len(self.blocks)
        if i == 0:
            return h, self.blocks[0](h)
        if i < n:  # first pass: (input, features)
            return h[0], self.blocks[i](h[1])
        if i == n:  # the view's pass starts from the input
            return self.blocks[0](torch.flip(h[0], dims=(-1,)))
        return self.blocks[i - n](h)

    def forward_exit(self, i: int, h: Any) -> torch.Tensor:
        n = len(self.blocks)
        return cast(torch.Tensor, self.exits[i](h[1]) if i < n else self.exits[i - n](h))


def with_second_look(model: MultiExitNetwork, view: str = "flip", depth: int | None = None) -> SecondLook:
    """`model` followed by a second pass of itself on another view of the input: 2N exits.

    Exits 0..D-1 are `model`'s first D on the input, D..2D-1 the same on the view (D = `depth`,
    default all N blocks; ``"flip"``: the input mirrored left to right; use it where the model was
    trained with flips, as ``einet train`` trains colour images: a mirrored digit is another
    digit). Weights are shared with `model`."""
    return SecondLook(model, view, depth)
