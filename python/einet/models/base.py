"""The multi-exit protocol every einet model follows, the paper's exit branch and a light one.

A multi-exit network is N blocks. Block i is a backbone segment (its *conv
part*, ``forward_block(i, h)``) followed by an exit *branch*
(``forward_exit(i, h)``) that turns the block's output into class logits.
Running the blocks one by one and any branch on a block's output gives exactly
what ``forward`` gives for that exit: the runtime relies on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from ..choices import EXIT_HEADS
from ..errors import EinetValueError


class MultiExitNetwork(nn.Module):
    """Blocks and exits held as two ModuleLists; ``forward`` returns every exit's logits."""

    def __init__(self, blocks: list[nn.Module], exits: list[nn.Module]) -> None:
        super().__init__()
        if len(blocks) != len(exits) or not blocks:
            raise EinetValueError(f"need as many exits as blocks (at least one), got {len(blocks)} and {len(exits)}")
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(exits)

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    def forward_block(self, i: int, h: Any) -> Any:
        """Conv part i: block i-1's output (or the input) to block i's output."""
        return self.blocks[i](h)

    def forward_exit(self, i: int, h: Any) -> torch.Tensor:
        """Branch i: block i's output to logits."""
        return cast(torch.Tensor, self.exits[i](h))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        h: Any = x
        for i in range(self.num_exits):
            h = self.forward_block(i, h)
            logits.append(self.forward_exit(i, h))
        return logits

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for block in self.blocks for p in block.parameters()]

    def branch_parameters(self, include_last: bool = True) -> list[nn.Parameter]:
        exits = self.exits if include_last else self.exits[:-1]
        return [p for branch in exits for p in branch.parameters()]


class Branch(nn.Module):
    """The paper's exit branch: one conv layer (with BN and ReLU) and two fully connected layers.

    The input is first average-pooled to at most ``pool_in`` x ``pool_in`` so that the
    conv stays cheap next to its block at any resolution; after the conv it is pooled
    to ``pool_out`` x ``pool_out`` before the FC layers.
    """

    def __init__(self, in_channels: int, num_classes: int, conv_channels: int | None = None, hidden: int = 128,
                 pool_in: int = 8, pool_out: int = 2) -> None:
        super().__init__()
        conv_channels = conv_channels or in_channels
        self.pool_in = pool_in
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, conv_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(conv_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pool_out),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(conv_channels * pool_out * pool_out, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] > self.pool_in or h.shape[-2] > self.pool_in:
            h = nn.functional.adaptive_avg_pool2d(h, (min(h.shape[-2], self.pool_in), min(h.shape[-1], self.pool_in)))
        return cast(torch.Tensor, self.classifier(self.conv(h)))


DEFAULT_LIGHT_POOL = 4  # what `einet train --exit-head light` trains
MAX_LIGHT_POOL = 32  # a light exit's largest pooled map: 32 x 32 is a CIFAR image's full resolution


def is_light_pool(pool: object) -> bool:
    """Whether `pool` is a light exit's pooled map size: a whole number in 1..MAX_LIGHT_POOL (not a bool)."""
    return type(pool) is int and 1 <= pool <= MAX_LIGHT_POOL


class LightBranch(nn.Module):
    """A cheap exit: the features average-pooled to ``pool`` x ``pool``, one linear layer.

    On a CPU at batch size 1 every layer costs tens of microseconds of dispatch however small it
    is, so the paper's seven-layer branch takes 100-270 us on our CPU, about what its VGG-16 block
    takes, and a plan pays it for every exit it runs. Two layers take 28-37 us: exits get cheap
    enough to run many (see docs/anytime.md, "light exits"), at some accuracy at the first exits.
    Maps smaller than ``pool`` are spread to it (the same linear map on more inputs: simple, at a
    few microseconds on VGG-16's last, 2x2 and 1x1, exits). A 4 x 4 pool throws away most of an
    early exit's map (32 x 32 on CIFAR); :func:`einet.models.refit.refit_light_exits` refits such
    exits at a finer pool, at almost the same cost.
    """

    def __init__(self, in_channels: int, num_classes: int, pool: int = DEFAULT_LIGHT_POOL) -> None:
        super().__init__()
        if not is_light_pool(pool):
            raise EinetValueError(f"a light exit's pool must be a whole number in 1..{MAX_LIGHT_POOL}, got {pool!r}")
        self.in_channels, self.num_classes, self.pool = in_channels, num_classes, pool
        self.linear = nn.Linear(in_channels * pool * pool, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-2:] != (self.pool, self.pool):  # smaller maps are spread: the layer sees pool x pool
            h = nn.functional.adaptive_avg_pool2d(h, self.pool)
        return cast(torch.Tensor, self.linear(h.flatten(1)))




def light_exits(model: MultiExitNetwork) -> list[int]:
    """The indices of `model`'s light exits, in order."""
    return [i for i, branch in enumerate(model.exits) if isinstance(branch, LightBranch)]


def light_pools(model: MultiExitNetwork) -> list[int]:
    """Each light exit's pool, in order: what a checkpoint's ``exit_pools`` records."""
    return [cast(LightBranch, model.exits[i]).pool for i in light_exits(model)]


def set_light_pools(model: MultiExitNetwork, pools: Sequence[int]) -> None:
    """Give `model`'s light exits these pools, one per light exit in order (a checkpoint's
    ``exit_pools``): an exit whose pool changes gets a new, untrained linear layer."""
    indices = light_exits(model)
    if len(pools) != len(indices):
        raise EinetValueError(f"exit_pools has {len(pools)} entries for {len(indices)} light exits")
    for i, pool in zip(indices, pools):
        branch = cast(LightBranch, model.exits[i])
        if pool != branch.pool:
            model.exits[i] = LightBranch(branch.in_channels, branch.num_classes, pool)


def exit_branch(head: str, in_channels: int, num_classes: int, conv_channels: int | None = None) -> nn.Module:
    """An exit branch of the kind `head` names: "paper" (:class:`Branch`) or "light" (:class:`LightBranch`)."""
    if head == "paper":
        return Branch(in_channels, num_classes, conv_channels)
    if head == "light":
        return LightBranch(in_channels, num_classes)
    raise EinetValueError(f"unknown exit head {head!r}: expected one of {', '.join(EXIT_HEADS)}")


def channels(base: int, width: float) -> int:
    """A channel count scaled by the width multiplier (at least 4)."""
    if width <= 0:
        raise EinetValueError(f"width must be > 0, got {width}")
    return max(4, round(base * width))
