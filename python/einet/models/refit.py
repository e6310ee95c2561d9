"""Refit a trained network's early light exits at a finer pool, on its frozen features.

A light exit pools its block's output to 4 x 4 and applies one linear layer. On an early block
that throws most of the map away (VGG-16's first block on CIFAR: 16 channels of 32 x 32, of
which the head sees 256 numbers), and the first exits are where an anytime curve loses most
under early deadlines (docs/anytime.md, "Reading"). Pooled to 8 x 8 instead, the same kind of
head costs a few microseconds more and, fitted on the frozen features of the training split,
is right 1.7-5.1 points more often on VGG-16's first four exits' test images (measured:
docs/training.md).

Only the chosen heads change: the backbone and every other exit keep their weights, so the
network's block times and its other exits' answers stay exactly what they were. Each candidate
(a light exit whose map is larger than its pool) is fitted as a multinomial logistic regression
on standardised features of the training images and, for colour images, their mirror images
(the flips training augments with), and is kept only if it is right more often than the old
head on the held-out split (the split the predictor and the deployment are chosen on; the test
split is never read). The fit costs a few extra forward passes through the first blocks, not
training epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from ..data import trained_with_flips
from ..errors import EinetTypeError, EinetValueError
from .base import MAX_LIGHT_POOL, LightBranch, MultiExitNetwork, is_light_pool, light_exits


@dataclass(frozen=True)
class RefitExit:
    """One candidate exit: its map, both pools, both heads' held-out accuracy, and which was kept."""

    exit: int  # 0-based
    map_size: tuple[int, int]
    old_pool: int
    new_pool: int
    old_accuracy: float
    new_accuracy: float

    @property
    def kept(self) -> bool:
        return self.new_accuracy > self.old_accuracy

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"kept": self.kept}


def refit_light_exits(model: MultiExitNetwork, train: Any, holdout: Any, pool: int = 8, epochs: int = 16,
                      batch_size: int = 512, lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0,
                      progress: bool = True) -> tuple[MultiExitNetwork, list[RefitExit]]:
    """A copy of `model` whose light exits with maps larger than their pool are refitted at `pool`
    (or at their map's size, if smaller) where that is right more often on `holdout`
    (ImageDatasets: normalised images, labels, no augmentation); returns it and one
    :class:`RefitExit` per candidate. `model` is not changed; :func:`einet.models.base.light_pools`
    of the copy is what a checkpoint's ``exit_pools`` spec key records."""
    from tqdm.auto import tqdm

    if not isinstance(model, MultiExitNetwork):
        raise EinetTypeError(f"refit_light_exits needs a MultiExitNetwork, got {type(model).__name__}")
    if not is_light_pool(pool):
        raise EinetValueError(f"pool must be a whole number in 1..{MAX_LIGHT_POOL}, got {pool!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EinetValueError(f"{name} must be a whole number >= 1, got {value!r}")
    for name, data in (("train", train), ("holdout", holdout)):
        if len(data.labels) == 0:
            raise EinetValueError(f"the {name} split is empty: refitting needs images in both splits")
    if not light_exits(model):
        raise EinetValueError("this network has no light exits to refit (train it with --exit-head light)")
    refitted = copy.deepcopy(model).eval()
    maps = _map_sizes(refitted, holdout.images[:1])
    heads = {i: cast(LightBranch, refitted.exits[i]) for i in light_exits(refitted)}
    new_pools = {i: min(pool, max(maps[i])) for i in heads}  # a finer pool than the map adds nothing
    candidates = [i for i, head in heads.items() if new_pools[i] > head.pool]
    flip = trained_with_flips(train.images.shape[1])
    generator = torch.Generator().manual_seed(seed)
    report = []
    for i in tqdm(candidates, desc="refitting light exits", disable=not progress, leave=False):
        old = heads[i]
        with torch.random.fork_rng(devices=[]):  # a new layer's initialisation must not move the caller's RNG
            new = LightBranch(old.in_channels, old.num_classes, new_pools[i])
        features = _pooled_features(refitted, i, train.images, new.pool, flip)
        labels = train.labels.repeat(2) if flip else train.labels
        _fit_linear(new.linear, features, labels, epochs, batch_size, lr, weight_decay, generator)
        old_accuracy, new_accuracy = _accuracies(refitted, i, (old, new), holdout)
        report.append(RefitExit(i, maps[i], old.pool, new.pool, old_accuracy, new_accuracy))
        if report[-1].kept:
            refitted.exits[i] = new
    return refitted.eval(), report


def _map_sizes(model: MultiExitNetwork, sample: torch.Tensor) -> list[tuple[int, int]]:
    """Each block's output height and width for inputs like `sample` (light exits see 4-d maps)."""
    sizes = []
    with torch.inference_mode():
        h: Any = sample
        for i in range(model.num_exits):
            h = model.forward_block(i, h)
            sizes.append((h.shape[-2], h.shape[-1]) if isinstance(h, torch.Tensor) and h.dim() == 4 else (1, 1))
    return sizes


CHUNK = 500  # images per forward pass while collecting features


def _block_outputs(model: MultiExitNetwork, exit_index: int, images: torch.Tensor,
                   flip: bool = False) -> Iterator[torch.Tensor]:
    """Block `exit_index`'s output for `images` (mirrored, with `flip`), CHUNK images at a time."""
    with torch.inference_mode():
        for first in range(0, len(images), CHUNK):
            h: Any = images[first:first + CHUNK]
            if flip:
                h = h.flip(-1)
            for b in range(exit_index + 1):
                h = model.forward_block(b, h)
            yield h


def _pooled_features(model: MultiExitNetwork, exit_index: int, images: torch.Tensor, pool: int,
                     flip: bool) -> torch.Tensor:
    """What a light exit with `pool` sees, for `images` (then their mirror images): float16 to halve memory."""
    return torch.cat([F.adaptive_avg_pool2d(h, pool).flatten(1).half()
                      for mirrored in ((False, True) if flip else (False,))
                      for h in _block_outputs(model, exit_index, images, mirrored)])


def _fit_linear(linear: nn.Linear, features: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int,
                lr: float, weight_decay: float, generator: torch.Generator) -> None:
    """Multinomial logistic regression on standardised features (Adam with a cosine schedule, L2 on
    the weights; these settings scored best on VGG-16's held-out split among 8 or 16 epochs and L2
    1e-5 to 1e-3), folded back into `linear` so that it takes the raw pooled features."""
    mean, std = _mean_std(features)
    weight = torch.zeros(linear.out_features, linear.in_features, requires_grad=True)  # convex: start at zero
    bias = torch.zeros(linear.out_features, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * -(-len(features) // batch_size))
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for first in range(0, len(order), batch_size):
            index = order[first:first + batch_size]
            x = (features[index].float() - mean) / std
            loss = F.cross_entropy(F.linear(x, weight, bias), labels[index]) + weight_decay * weight.pow(2).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        linear.weight.copy_(weight / std)
        linear.bias.copy_(bias - (weight * (mean / std)).sum(1))


def _mean_std(features: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation (+1e-4, so that a dead feature divides safely), summed
    in float64 a chunk at a time: no float32 copy of all the features (on VGG-16's fifth exit that
    copy and its squares were 3 GB, the build's peak)."""
    total = torch.zeros(features.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for first in range(0, len(features), chunk):
        part = features[first:first + chunk].double()
        total += part.sum(0)
        squares += part.square().sum(0)
    mean = total / len(features)
    variance = (squares / len(features) - mean.square()).clamp_(min=0.0)
    return mean.float(), (variance.sqrt() + 1e-4).float()


def _accuracies(model: MultiExitNetwork, exit_index: int, heads: tuple[nn.Module, ...], data: Any) -> list[float]:
    """How often each of `heads` on block `exit_index`'s output is right on `data` (one pass through the blocks)."""
    right = [0] * len(heads)
    with torch.inference_mode():
        for first, h in zip(range(0, len(data.labels), CHUNK), _block_outputs(model, exit_index, data.images)):
            labels = data.labels[first:first + CHUNK]
            for k, head in enumerate(heads):
                right[k] += int((head(h).argmax(1) == labels).sum())
    return [count / len(data.labels) for count in right]
