"""Multi-exit models: exit counts, block-by-block equality with forward, the converter."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from einet.models import ConversionError, MultiExitNetwork, build, convert, msdnet  # noqa: E402
from einet.models.base import Branch, LightBranch  # noqa: E402
from einet.models.zoo import Bottleneck  # noqa: E402

EXITS = {"b_alexnet": 3, "flex_vgg16": 5, "vgg16_fine": 14, "resnet50_fine": 6, "msdnet21": 21, "msdnet40": 40}


@pytest.mark.parametrize("exit_head", ["paper", "light"])
@pytest.mark.parametrize("name", sorted(EXITS))
@pytest.mark.parametrize(("in_channels", "size"), [(3, 32), (1, 28)])
def test_blocks_and_branches_reproduce_forward(name, in_channels, size, exit_head):
    torch.manual_seed(0)
    model = build(name, num_classes=7, in_channels=in_channels, width=0.125, exit_head=exit_head).eval()
    assert model.num_exits == EXITS[name]
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        every_exit = model(x)
        h = x
        for i in range(model.num_exits):
            h = model.forward_block(i, h)
            assert torch.equal(model.forward_exit(i, h), every_exit[i]), f"exit {i}"
    assert all(logits.shape == (2, 7) for logits in every_exit)


def test_light_exits_are_one_linear_layer_on_pooled_features():
    paper, light = build("vgg16_fine", width=0.25), build("vgg16_fine", width=0.25, exit_head="light")
    assert isinstance(paper.exits[0], Branch) and isinstance(light.exits[0], LightBranch)
    assert [type(m) for m in light.exits[0].modules()] == [LightBranch, nn.Linear]
    assert type(light.exits[-1]) is type(paper.exits[-1])  # the final classifier is the network's own
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in paper.parameters())
    head = LightBranch(8, 3, pool=4)
    for shape in ((32, 32), (4, 4), (2, 2), (7, 3)):  # pooled down, taken as it is, spread up: pool x pool features
        assert head(torch.randn(5, 8, *shape)).shape == (5, 3)
    with pytest.raises(ValueError, match="unknown exit head 'heavy'"):
        build("flex_vgg16", exit_head="heavy")


def test_width_scales_parameters():
    small = sum(p.numel() for p in build("flex_vgg16", width=0.25).parameters())
    large = sum(p.numel() for p in build("flex_vgg16", width=0.5).parameters())
    assert large > 3 * small


@pytest.mark.parametrize("bad", [{"width": 0.0}, {"width": -1.0}])
def test_bad_width(bad):
    with pytest.raises(ValueError, match="width must be > 0"):
        build("b_alexnet", **bad)


def test_unknown_model_and_bad_msdnet():
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        build("alexnet")
    with pytest.raises(ValueError, match="blocks must be >= 1"):
        msdnet(blocks=0)


def sequential_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.stage1 = nn.Sequential(Bottleneck(16, 4), Bottleneck(16, 4))
        self.stage2 = Bottleneck(16, 8, stride=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize(("make", "exits"), [(sequential_cnn, 3), (SmallResNet, 4)])
def test_converted_last_exit_reproduces_the_original(make, exits):
    torch.manual_seed(1)
    original = make().eval()
    x = torch.randn(5, 3, 32, 32)
    model = convert(original, x)
    assert isinstance(model, MultiExitNetwork)
    assert model.num_exits == exits
    with torch.no_grad():
        outputs = model.eval()(x)
        assert torch.equal(outputs[-1], original(x))
        h = x
        for i in range(model.num_exits):
            h = model.forward_block(i, h)
            assert torch.equal(model.forward_exit(i, h), outputs[i])
    # The converted network shares nothing surprising: weights are the original's values.
    assert any(torch.equal(p, original.state_dict()["stem.0.weight" if exits == 4 else "0.weight"])
               for p in model.state_dict().values() if p.dim() == 4)


def test_residual_blocks_are_never_split():
    model = convert(SmallResNet().eval(), torch.randn(1, 3, 32, 32))
    # stem | bottleneck | bottleneck | bottleneck + head: a cut inside a bottleneck would leave two live tensors.
    assert model.num_exits == 4


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.fc(self.conv(x).mean((2, 3)))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, y):
        return self.conv(x + y).mean((1, 2, 3))[:, None]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (DataDependent(), "cannot trace DataDependent"),
        (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), "no conv layers"),
        (TwoInputs(), "exactly one input"),
        (nn.Sequential(nn.Conv2d(3, 4, 3)), "logits"),
    ],
)
def test_unconvertible_models(model, message):
    with pytest.raises(ConversionError, match=message):
        convert(model, torch.randn(2, 3, 32, 32))
