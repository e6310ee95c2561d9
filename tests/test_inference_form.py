"""The inference form (einet.models.inference): the prepared network answers as the trained one, at every
exit, in every layout; the trained network is left untouched; a form is recorded and re-applied."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from einet.models import MultiExitNetwork, build, convert  # noqa: E402
from einet.models.inference import ChannelsLast, InferenceForm, choose_form, fold, verify  # noqa: E402

EXITS = {"b_alexnet": 3, "flex_vgg16": 5, "vgg16_fine": 14, "resnet50_fine": 6, "msdnet21": 21}


def _trained_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm with running statistics and affine parameters away from their defaults, as after training
    (the defaults would make a fold trivially exact)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        model.train()
        for _ in range(3):
            model(x)
    return model.eval()


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(module, kind) for module in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("exit_head", ["paper", "light"])
@pytest.mark.parametrize("name", sorted(EXITS))
def test_the_prepared_form_answers_as_the_network_at_every_exit_in_every_layout(name, exit_head):
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    model = _trained_statistics(build(name, num_classes=10, in_channels=3, width=0.125, exit_head=exit_head), x)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    n = model.num_exits
    for layouts in [(False,) * n, (True,) * n, tuple(i % 2 == 0 for i in range(n))]:
        prepared = InferenceForm("prepared", layouts).apply(model)
        assert _count(prepared, nn.BatchNorm2d) == 0 and _count(prepared, ChannelsLast) == sum(layouts)
        assert verify(model, prepared, x) < 1e-5
        with torch.inference_mode():  # block by block, as the runtime runs it
            h, every_exit = x[:1], model(x[:1])
            for i in range(n):
                h = prepared.forward_block(i, h)
                torch.testing.assert_close(prepared.forward_exit(i, h), every_exit[i], rtol=1e-4, atol=1e-5)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())  # untouched
    assert _count(model, nn.BatchNorm2d) > 0 and all(p.requires_grad for p in model.parameters())


def test_dropout_and_identity_layers_leave_and_a_converted_network_is_folded_too():
    torch.manual_seed(1)
    original = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                             nn.Identity(), nn.Conv2d(8, 8, 3, padding=1, bias=True), nn.BatchNorm2d(8, affine=False),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 10))
    x = torch.randn(8, 3, 16, 16)
    model = convert(_trained_statistics(original, x), x)
    prepared = InferenceForm("prepared", (True,) * model.num_exits).apply(model)
    assert _count(prepared, nn.BatchNorm2d) == 0 and _count(prepared, nn.Dropout) == 0
    verify(model, prepared, x)


def test_a_batchnorm_that_does_not_follow_a_conv_stays():
    blocks = [nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1)),
              nn.Sequential(nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5))]
    exits = [nn.Sequential(nn.Flatten(), nn.LazyLinear(3)) for _ in blocks]
    model = MultiExitNetwork(blocks, exits)
    x = torch.randn(4, 3, 4, 4)
    _trained_statistics(model, x)
    prepared = fold(model)
    assert _count(prepared, nn.BatchNorm2d) == 1
    verify(model, prepared, x)


def test_a_form_is_recorded_and_checked():
    form = InferenceForm("prepared", (True, False, True))
    assert InferenceForm.from_record(form.record()) == form
    assert InferenceForm.from_record(None) == InferenceForm()  # a profile from before forms: eager
    for bad in ({"name": "fast", "channels_last": []}, {"name": "prepared", "channels_last": [1]},
                {"name": "prepared"}, ["prepared"], {"name": "eager", "channels_last": [True]}):
        with pytest.raises(ValueError):
            InferenceForm.from_record(bad)
    with pytest.raises(ValueError, match="layouts for 3 blocks"):
        form.apply(build("vgg16_fine", num_classes=10, width=0.125))


def test_choose_form_gives_a_layout_per_block_and_verify_catches_a_wrong_network():
    torch.manual_seed(2)
    x = torch.randn(8, 3, 32, 32)
    model = _trained_statistics(build("b_alexnet", num_classes=10, width=0.125), x)
    form = choose_form(model, x[:1], repeats=2, rounds=1)
    assert form.name == "prepared" and len(form.channels_last) == model.num_exits
    for layouts in itertools.product([False, True], repeat=model.num_exits):
        verify(model, InferenceForm("prepared", layouts).apply(model), x)
    broken = fold(model)
    with torch.no_grad():
        next(broken.exits[1].parameters()).mul_(3.0)
    with pytest.raises(ValueError, match="differs from the network at exit 2"):
        verify(model, broken, x)
