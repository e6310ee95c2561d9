"""The paper's multi-exit networks, for 1-channel (MNIST) or 3-channel (CIFAR) 28/32-pixel inputs.

Each constructor takes ``num_classes``, ``in_channels``, ``width`` (a
channel multiplier) and ``exit_head`` (the early exits' branch: "paper" or
"light", see :func:`~einet.models.base.exit_branch`) and returns a :class:`MultiExitNetwork`. Exits: b_alexnet 3,
flex_vgg16 5, vgg16_fine 14, resnet50_fine 6, msdnet(blocks=21) 21,
msdnet(blocks=40) 40.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from ..errors import EinetValueError
from .base import MultiExitNetwork, channels, exit_branch, set_light_pools


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """Convolution (same padding, no bias), batch norm and ReLU: the zoo's building block."""
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def classifier_head(in_channels: int, num_classes: int, hidden: int, pool: int = 1) -> nn.Sequential:
    """The final classifier: pool, flatten and two fully connected layers."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(in_channels * pool * pool, hidden),
                         nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(hidden, num_classes))


def b_alexnet(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
              exit_head: str = "paper") -> MultiExitNetwork:
    """B-AlexNet (BranchyNet's AlexNet): exits after conv1, after conv2, and the final classifier."""
    c1, c2, c3, c4 = (channels(c, width) for c in (64, 192, 384, 256))
    blocks: list[nn.Module] = [
        nn.Sequential(*conv_bn_relu(in_channels, c1, 5), nn.MaxPool2d(2)),
        nn.Sequential(*conv_bn_relu(c1, c2, 5), nn.MaxPool2d(2)),
        nn.Sequential(*conv_bn_relu(c2, c3), *conv_bn_relu(c3, c4), *conv_bn_relu(c4, c4), nn.MaxPool2d(2)),
    ]
    exits = [exit_branch(exit_head, c1, num_classes), exit_branch(exit_head, c2, num_classes),
             classifier_head(c4, num_classes, 2 * c4, pool=2)]
    return MultiExitNetwork(blocks, exits)


VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _vgg_layers(in_channels: int, width: float) -> list[tuple[nn.Module, int]]:
    """VGG-16's 13 conv layers as (module, out channels); a layer ending a stage carries its max-pool."""
    layers: list[tuple[nn.Module, int]] = []
    cin = in_channels
    for stage in VGG16_STAGES:
        for k, base in enumerate(stage):
            cout = channels(base, width)
            modules = conv_bn_relu(cin, cout)
            if k == len(stage) - 1:
                modules.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: 28-pixel inputs survive five pools
            layers.append((nn.Sequential(*modules), cout))
            cin = cout
    return layers


def flex_vgg16(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
               exit_head: str = "paper") -> MultiExitNetwork:
    """VGG-16 with one exit per stage (5): branches after stages 1-4, the classifier after stage 5."""
    layers = _vgg_layers(in_channels, width)
    blocks: list[nn.Module] = []
    exits: list[nn.Module] = []
    first = 0
    for stage in VGG16_STAGES:
        modules = [m for m, _ in layers[first:first + len(stage)]]
        cout = layers[first + len(stage) - 1][1]
        first += len(stage)
        blocks.append(nn.Sequential(*modules))
        exits.append(exit_branch(exit_head, cout, num_classes))
    exits[-1] = classifier_head(layers[-1][1], num_classes, layers[-1][1])
    return MultiExitNetwork(blocks, exits)


def vgg16_fine(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
               exit_head: str = "paper") -> MultiExitNetwork:
    """Fine-grained VGG-16 (14 exits): one block per conv layer, each with a branch, plus the classifier.

    Block 13 is the classifier's hidden layer (pool, flatten, FC, ReLU); its exit is the last FC.
    """
    layers = _vgg_layers(in_channels, width)
    blocks = [m for m, _ in layers]
    exits: list[nn.Module] = [exit_branch(exit_head, c, num_classes) for _, c in layers]
    last = layers[-1][1]
    blocks.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, last), nn.ReLU(inplace=True),
                                nn.Dropout(0.2)))
    exits.append(nn.Linear(last, num_classes))
    return MultiExitNetwork(blocks, exits)


class Bottleneck(nn.Module):
    """ResNet's bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), with a projected shortcut when shapes change."""

    expansion = 4

    def __init__(self, cin: int, mid: int, stride: int = 1) -> None:
        super().__init__()
        cout = mid * self.expansion
        self.body = nn.Sequential(*conv_bn_relu(cin, mid, 1), *conv_bn_relu(mid, mid, 3, stride),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet50_fine(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                  exit_head: str = "paper") -> MultiExitNetwork:
    """ResNet-50 (CIFAR stem: one 3x3 conv, no max-pool) cut into 6 blocks.

    Cuts (each where only one tensor is live, between bottlenecks): after layer1;
    after layer2; after the 3rd of layer3's 6 bottlenecks; after layer3; after the
    2nd of layer4's 3 bottlenecks; and after layer4, whose exit is the original
    classifier (global average pool and FC). The other five exits are branches.
    """
    stem = channels(64, width)
    mids = [channels(m, width) for m in (64, 128, 256, 512)]
    counts, strides = (3, 4, 6, 3), (1, 2, 2, 2)
    stages: list[list[nn.Module]] = []
    cin = stem
    for mid, count, stride in zip(mids, counts, strides):
        stage: list[nn.Module] = []
        for k in range(count):
            stage.append(Bottleneck(cin, mid, stride if k == 0 else 1))
            cin = mid * Bottleneck.expansion
        stages.append(stage)
    layer1, layer2, layer3, layer4 = stages
    blocks: list[nn.Module] = [
        nn.Sequential(*conv_bn_relu(in_channels, stem), *layer1),
        nn.Sequential(*layer2),
        nn.Sequential(*layer3[:3]),
        nn.Sequential(*layer3[3:]),
        nn.Sequential(*layer4[:2]),
        nn.Sequential(*layer4[2:]),
    ]
    outs = [mids[0] * 4, mids[1] * 4, mids[2] * 4, mids[2] * 4, mids[3] * 4]
    exits: list[nn.Module] = [exit_branch(exit_head, c, num_classes, min(c, channels(256, width))) for c in outs]
    exits.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)))
    return MultiExitNetwork(blocks, exits)


class MSDLayer(nn.Module):
    """One MSDNet layer over three scales: each scale grows by a regular conv of itself and a
    strided conv of the finer scale; features are concatenated (dense connectivity)."""

    def __init__(self, cins: list[int], growths: list[int], compress: bool) -> None:
        super().__init__()
        self.compress = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(c, c // 2, 1)) if compress else nn.Identity() for c in cins)
        cins = [c // 2 for c in cins] if compress else cins
        self.regular = nn.ModuleList()
        self.strided = nn.ModuleList()
        for s, (c, g) in enumerate(zip(cins, growths)):
            self.regular.append(nn.Sequential(*conv_bn_relu(c, g if s == 0 else g // 2)))
            self.strided.append(nn.Identity() if s == 0 else nn.Sequential(*conv_bn_relu(cins[s - 1], g // 2, 3, 2)))
        self.out_channels = [c + g for c, g in zip(cins, growths)]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        features = [squeeze(f) for squeeze, f in zip(self.compress, features)]
        out = []
        for s, f in enumerate(features):
            new = [self.regular[s](f)] if s == 0 else [self.regular[s](f), self.strided[s](features[s - 1])]
            out.append(torch.cat([f, *new], dim=1))
        return out


class MSDStem(nn.Module):
    """MSDNet's first layer: the input at three scales (full, 1/2, 1/4 resolution)."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.scales = nn.ModuleList([
            nn.Sequential(*conv_bn_relu(in_channels, widths[0])),
            nn.Sequential(*conv_bn_relu(widths[0], widths[1], 3, 2)),
            nn.Sequential(*conv_bn_relu(widths[1], widths[2], 3, 2)),
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for scale in self.scales:
            x = scale(x)
            features.append(x)
        return features


class CoarsestScale(nn.Module):
    """Wraps an exit so it reads the coarsest scale of a multi-scale state."""

    def __init__(self, exit_branch: nn.Module) -> None:
        super().__init__()
        self.exit = exit_branch

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.exit(features[-1]))


def msdnet(blocks: int = 21, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
           growth: int = 6, compress_every: int = 8, exit_head: str = "paper") -> MultiExitNetwork:
    """MSDNet in its CIFAR configuration: three scales (1, 1/2, 1/4), 16 x (1, 2, 4) stem channels,
    growth rate 6 x (1, 2, 4); one classifier per block on the coarsest scale. Every
    `compress_every` blocks a 1x1 conv halves each scale's channels (MSDNet's transition),
    keeping 40-block networks affordable.
    """
    if blocks < 1:
        raise EinetValueError(f"blocks must be >= 1, got {blocks}")
    widths = [channels(16 * f, width) for f in (1, 2, 4)]
    growths = [channels(growth * f, width) for f in (1, 2, 4)]
    growths = [g + g % 2 for g in growths]  # even: the finer scales split growth between two convs
    layers: list[nn.Module] = [MSDStem(in_channels, widths)]
    current = widths
    coarsest = [widths[-1]]  # each block's coarsest-scale channels
    for i in range(1, blocks):
        layer = MSDLayer(current, growths, compress=i % compress_every == 0)
        layers.append(layer)
        current = layer.out_channels
        coarsest.append(current[-1])
    exits: list[nn.Module] = [CoarsestScale(exit_branch(exit_head, c, num_classes, channels(128, width)))
                              for c in coarsest]
    return MultiExitNetwork(layers, exits)


ZOO: dict[str, Callable[..., MultiExitNetwork]] = {
    "b_alexnet": b_alexnet,
    "flex_vgg16": flex_vgg16,
    "vgg16_fine": vgg16_fine,
    "resnet50_fine": resnet50_fine,
    "msdnet21": lambda **kw: msdnet(blocks=21, **kw),
    "msdnet40": lambda **kw: msdnet(blocks=40, **kw),
}


def build(name: str, exit_pools: Sequence[int] | None = None, **kwargs: object) -> MultiExitNetwork:
    """A zoo model by name: b_alexnet, flex_vgg16, vgg16_fine, resnet50_fine, msdnet21, msdnet40.

    `exit_pools`: its light exits' pools, one per light exit (as :func:`einet.models.refit.refit_light_exits`
    writes them into a checkpoint's spec); default: each head's own."""
    if name not in ZOO:
        raise EinetValueError(f"unknown model {name!r}: expected one of {', '.join(ZOO)}")
    model = ZOO[name](**kwargs)
    if exit_pools is not None:
        set_light_pools(model, exit_pools)
    return model
