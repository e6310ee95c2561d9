"""What a runtime's network takes, and the way in for raw images.

A bundle records its input: one image of (C, H, W), normalised per channel with a mean and a standard
deviation measured on its training data. :class:`InputSpec` checks a tensor against that before a
block runs (a batch of eight, a 64x64 image for a 28x28 network, raw pixels are refused, not answered)
and turns uint8 images into what the network takes (``runtime.prepare``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import EinetValueError


@dataclass(frozen=True)
class InputSpec:
    """One input image's shape (C, H, W) and its normalisation (per-channel mean and std of pixels in [0, 1])."""

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, shape: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> InputSpec:
        c, h, w = (int(n) for n in shape)
        return cls((c, h, w), tuple(float(m) for m in mean), tuple(float(s) for s in std))

    def check(self, x: torch.Tensor) -> None:
        """Refuse (ValueError) a tensor that is not one normalised image of this shape: a batch of one,
        floating point (uint8 pixels go through :meth:`preprocess` first)."""
        if not x.is_floating_point() or x.shape != (1, *self.shape):
            raise EinetValueError(f"the input must be one normalised image, a float tensor of shape (1, "
                                  f"{self.shape[0]}, "
                                  f"{self.shape[1]}, {self.shape[2]}), got {x.dtype} {tuple(x.shape)}: give "
                                  "uint8 images "
                                  "to runtime.prepare() (the bundle's normalisation) and infer one at a time")

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images [N, H, W, C] (or one [H, W, C]) to the normalised float tensor [N, C, H, W]."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8 or \
                (images.shape[3], *images.shape[1:3]) != self.shape:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise EinetValueError(f"images must be uint8 [N, H, W, C] with (C, H, W) = {self.shape}, got {got}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        view = (1, self.shape[0], 1, 1)
        return (x - torch.tensor(self.mean).view(view)) / torch.tensor(self.std).view(view)
