"""Small re-implementations of public CNN families, as their authors' code writes them (random weights,
CIFAR-sized inputs), for measuring how many einet's converter turns into multi-exit networks exactly.

Each is written the way the public code is (torchvision, timm, the papers' repositories): the patterns
that matter to a tracer are kept: residual adds, concatenations, channel shuffles, squeeze-excite
products, layer norms over permuted maps, stochastic depth behind ``if self.training``, Python
control flow on tensor values inside a block, ``forward(x, pre_logits=False)``-style optional
arguments, ``torch.jit.is_scripting()`` checks, flattening with ``x.size(0)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2),
                                      conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, s=stride), conv_bn(cout, cout, act=False)
        self.downsample = conv_bn(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + identity)


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, groups=mid),
                                  conv_bn(mid, cout, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                                      InvertedResidual(24, 24, 1), InvertedResidual(24, 32, 2), conv_bn(32, 64, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = conv_bn(cin, growth)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([features, self.conv(features)], 1)


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), DenseLayer(16, 8), DenseLayer(24, 8), conv_bn(32, 32, 1),
                                      nn.AvgPool2d(2), DenseLayer(32, 8), DenseLayer(40, 8))
        self.classifier = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze, self.e1, self.e3 = conv_bn(cin, squeeze, 1), conv_bn(squeeze, expand, 1), conv_bn(squeeze,
                                                                                                         expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 32), Fire(32, 8, 16), nn.MaxPool2d(2), Fire(32, 16, 32))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(64, num_classes, 1), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class Inception(nn.Module):
    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.b1, self.b2 = conv_bn(cin, c, 1), nn.Sequential(conv_bn(cin, c, 1), conv_bn(c, c))
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.pre = conv_bn(3, 24)
        self.a, self.b = Inception(24, 16), Inception(48, 16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.pool(self.a(self.pre(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.size()
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.branch = nn.Sequential(conv_bn(half, half, 1), conv_bn(half, half, 3, groups=half, act=False),
                                    conv_bn(half, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1), 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 32)
        self.stage2 = nn.Sequential(ShuffleUnit(32), ShuffleUnit(32))
        self.conv5 = conv_bn(32, 64, 1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv5(self.stage2(self.conv1(x))).mean([2, 3]))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class MBConv(nn.Module):
    """EfficientNet's block with stochastic depth, as timm writes it (drop path only in training)."""

    def __init__(self, c: int, drop_path: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn(c, 4 * c, 1), conv_bn(4 * c, 4 * c, 3, groups=4 * c), SqueezeExcite(4 * c),
                                  conv_bn(4 * c, c, 1, act=False))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.training and self.drop_path > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.drop_path
            out = out * keep / (1 - self.drop_path)
        return x + out


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, s=2)
        self.blocks = nn.Sequential(MBConv(16), MBConv(16))
        self.head = conv_bn(16, 64, 1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pw2(F.gelu(self.pw1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, 4), LayerNorm2d(32))
        self.stages = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean([-2, -1]))


class TimmStyle(nn.Module):
    """timm's interface: forward_features, forward_head(x, pre_logits=False), forward(x)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.stages = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=pre_logits)


class DynamicBlock(nn.Module):
    """A block whose forward branches on the data (e.g. a routing or early-skip decision)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = conv_bn(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().mean() > 1e6:  # never on real inputs: the branch only makes the graph data-dependent
            return x
        return x + self.conv(x)


class DynamicNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = nn.Sequential(DynamicBlock(16), nn.MaxPool2d(2), conv_bn(16, 32), DynamicBlock(32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


class ScriptingChecks(nn.Module):
    """Checks of the input shape and of torch.jit, as library models make them."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), CheckedBlock(16), nn.MaxPool2d(2), CheckedBlock(16))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(2).mean(-1))


class CheckedBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = conv_bn(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            assert x.dim() == 4, "expects a batch of maps"
        return self.conv(x)


class RootControlFlow(nn.Module):
    """Control flow on the data in the network's own forward: no tracer can follow it (refused)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.a, self.b = conv_bn(3, 16), conv_bn(16, 16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x)
        if x.mean() > 0:
            x = self.b(x)
        return self.fc(x.mean((2, 3)))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "VGG": VGG, "ResNet": ResNet, "MobileNetV2": MobileNetV2, "DenseNet": DenseNet, "SqueezeNet": SqueezeNet,
    "GoogLeNet": GoogLeNet, "ShuffleNetV2": ShuffleNetV2, "EfficientNet (drop path)": EfficientNet,
    "ConvNeXt": ConvNeXt, "timm-style (pre_logits=False)": TimmStyle, "data-dependent block": DynamicNet,
    "shape asserts, torch.jit checks": ScriptingChecks, "control flow in forward itself": RootControlFlow,
}
