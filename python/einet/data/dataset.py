"""Torch tensors from :class:`~einet.data.ImageArrays`: :class:`ImageDataset` (normalised, in memory,
with the standard augmentation), the standard normalisations, and the images blocks are timed with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EinetValueError
from .arrays import ImageArrays

if TYPE_CHECKING:
    import torch

# Per-channel mean and std of the training sets, on pixel values scaled to [0, 1].
NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class ImageDataset:
    """Normalised float tensors from ImageArrays, with batch-wise augmentation.

    Augmentation (training): random crop with `pad` pixels of zero padding and,
    for colour images, a random horizontal flip: the standard CIFAR recipe.
    Batches are produced from tensors held in memory, which on a small CPU is
    much faster than a per-sample DataLoader.
    """

    def __init__(self, arrays: ImageArrays, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 augment: bool = False, pad: int = 4) -> None:
        import torch

        images = torch.from_numpy(arrays.images).permute(0, 3, 1, 2).float().div_(255.0)
        if mean is None or std is None:
            mean = tuple(images.mean(dim=(0, 2, 3)).tolist())
            std = tuple(images.std(dim=(0, 2, 3)).tolist())
        if len(mean) != arrays.channels or len(std) != arrays.channels:
            raise EinetValueError(f"mean/std have {len(mean)}/{len(std)} entries for {arrays.channels} channels")
        self.mean, self.std = tuple(mean), tuple(std)
        view = (1, arrays.channels, 1, 1)
        self.images = (images - torch.tensor(mean).view(view)) / torch.tensor(std).view(view)
        self.labels = torch.from_numpy(arrays.labels)
        self.classes = arrays.classes
        self.augment = augment
        self.pad = pad

    def __len__(self) -> int:
        return int(self.labels.numel())

    def to(self, device: str | torch.device) -> ImageDataset:
        """Move the tensors (e.g. to a GPU, where batches and augmentation then stay)."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool | None = None, order: torch.Tensor | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches; augmented when the dataset was built with augment=True (or `augment`
        says so). `order`: the sample indices to batch (e.g. one process's shard), instead of all of them.
        `shard` = (rank, world size) of such a shard (``order[rank::world_size]`` of one order): the
        augmentation is drawn for the whole global batch and this process keeps its share, so every
        sample is augmented exactly as in a single process with the same generator."""
        import torch

        if order is None:
            order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        augment = self.augment if augment is None else augment
        for first in range(0, len(order), batch_size):
            index = order[first:first + batch_size]
            images = self.images[index]
            if augment:
                images = _augment(images, self.pad, generator, shard)
            yield images, self.labels[index]


def trained_with_flips(channels: int) -> bool:
    """Whether training shows the network mirrored images: colour ones (a mirrored digit is another digit)."""
    return channels == 3


def _augment(images: torch.Tensor, pad: int, generator: torch.Generator | None,
             shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Random crops of the zero-padded batch (one offset per image) and, for colour, random flips.
    With `shard` = (rank, world size) the draws are made for the global batch of world size x n images,
    of which this batch holds every world-size-th from `rank` on."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    rank, world = shard
    device = images.device
    if device.type != "cpu":
        generator = None  # a CPU generator cannot draw on the GPU: use the device's (seeded by manual_seed)
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n * world,), generator=generator, device=device)[rank::world]
    dx = torch.randint(0, 2 * pad + 1, (n * world,), generator=generator, device=device)[rank::world]
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])[:, None, None, :]
    index_n = torch.arange(n, device=device)[:, None, None, None]
    out = padded[index_n, torch.arange(c, device=device)[None, :, None, None], rows, cols]
    if trained_with_flips(c):
        flip = torch.rand(n * world, generator=generator, device=device)[rank::world] < 0.5
        out[flip] = out[flip].flip(3)
    return out


def timing_arrays(arrays: ImageArrays, count: int = 200) -> ImageArrays:
    """The real inputs blocks are timed with: `count` images of `arrays` drawn at random (seed 0, so
    across classes). Block times depend on the data."""
    return arrays.subset(np.random.default_rng(0).permutation(len(arrays))[:count])


def timing_images(name: str, arrays: ImageArrays, count: int = 200) -> torch.Tensor:
    """The inputs `einet profile` times blocks with (:func:`timing_arrays`), normalised as for `name`."""
    return dataset_for(name, timing_arrays(arrays, count), train=False).images


def dataset_for(name: str, arrays: ImageArrays, train: bool) -> ImageDataset:
    """An ImageDataset with the standard normalisation of `name` (computed from the data if unknown)."""
    mean, std = NORMALISATION.get(name, (None, None))
    return ImageDataset(arrays, mean, std, augment=train)
