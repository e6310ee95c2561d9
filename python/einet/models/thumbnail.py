"""An answer from time zero: a near-free classifier on a thumbnail, as the network's first exit.

Before the first branch of a multi-exit network finishes, nothing is held, and that share of the
exit-time mass is always wrong (or, with the class prior, right for one class in ten). A linear
classifier on an average-pooled thumbnail of the input costs microseconds and is right far more
often than the prior. :func:`with_thumbnail_exit` prepends it as exit 0 (its block passes the
input on unchanged), so the planner, the profiles, the simulator and the runtime treat it like
any other exit: its time is measured in the ET-profile as its own first block, and the planner
decides whether to run it.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from ..errors import EinetValueError
from .base import MultiExitNetwork


class ThumbnailClassifier(nn.Module):
    """Logits from a `size` x `size` average-pooled thumbnail: one linear layer."""

    def __init__(self, in_channels: int, num_classes: int, size: int = 8) -> None:
        super().__init__()
        if size < 1 or in_channels < 1 or num_classes < 2:
            raise EinetValueError(f"need size >= 1, in_channels >= 1, num_classes >= 2; got {size}, {in_channels}, "
                                  f"{num_classes}")
        self.size = size
        self.linear = nn.Linear(in_channels * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.linear(nn.functional.adaptive_avg_pool2d(x, self.size).flatten(1)))


class ThumbnailFirst(MultiExitNetwork):
    """`model`'s blocks and exits behind a thumbnail exit 0 (its block: the identity). `model` runs as
    it defines its blocks (a second look included), so the thumbnail goes outermost."""

    def __init__(self, model: MultiExitNetwork, thumbnail: ThumbnailClassifier) -> None:
        super().__init__([nn.Identity()], [thumbnail])
        self.inner = model

    @property
    def num_exits(self) -> int:
        return 1 + self.inner.num_exits

    def forward_block(self, i: int, h: Any) -> Any:
        return h if i == 0 else self.inner.forward_block(i - 1, h)

    def forward_exit(self, i: int, h: Any) -> torch.Tensor:
        return cast(torch.Tensor, self.exits[0](h)) if i == 0 else self.inner.forward_exit(i - 1, h)


def with_thumbnail_exit(model: MultiExitNetwork, thumbnail: ThumbnailClassifier) -> MultiExitNetwork:
    """`model` with `thumbnail` as a new exit 0 in front (its block: the identity)."""
    return ThumbnailFirst(model, thumbnail)


def fit_thumbnail(images: torch.Tensor, labels: torch.Tensor, num_classes: int, size: int = 8, epochs: int = 30,
                  batch_size: int = 512, lr: float = 0.01, seed: int = 0) -> ThumbnailClassifier:
    """Train a thumbnail classifier (cross-entropy, Adam) on normalised images [N, C, H, W]."""
    if epochs < 1 or len(images) != len(labels) or len(images) == 0:
        raise EinetValueError(f"need epochs >= 1 and as many labels as images (> 0), got {epochs}, {len(labels)}, "
                              f"{len(images)}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ThumbnailClassifier(images.shape[1], num_classes, size)
    with torch.no_grad():
        pooled = nn.functional.adaptive_avg_pool2d(images, size).flatten(1)  # the thumbnails, once
    optimizer = torch.optim.Adam(model.linear.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(pooled), generator=generator)
        for first in range(0, len(pooled), batch_size):
            index = order[first:first + batch_size]
            loss = nn.functional.cross_entropy(model.linear(pooled[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return model.eval()
