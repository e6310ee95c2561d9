"""Refitting early light exits at a finer pool: only better heads kept, nothing else touched, saved and reloaded."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from einet.data import ImageArrays, ImageDataset  # noqa: E402
from einet.formats.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from einet.models import build  # noqa: E402
from einet.models.base import LightBranch, light_exits, set_light_pools  # noqa: E402
from einet.models.refit import refit_light_exits  # noqa: E402


def band_dataset(count: int, seed: int) -> ImageDataset:
    """Three classes told apart only by *where* a bright band of 512 pixels is (top half, bottom
    half, middle columns; each its own mirror image, as flip augmentation assumes): a 4 x 4 pool
    of the first block's map keeps that, a 1 x 1 pool hardly can."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 3
    images = rng.integers(0, 60, (count, 32, 32, 3), dtype=np.uint8)
    images[labels == 0, :16] += 150
    images[labels == 1, 16:] += 150
    images[labels == 2, :, 8:24] += 150
    return ImageDataset(ImageArrays(images, labels, ("top", "bottom", "middle")), augment=False)


def coarse_model() -> torch.nn.Module:
    """B-AlexNet with light exits pooled to 1 x 1: the first exit cannot see where the patch is."""
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=3, in_channels=3, width=0.125, exit_head="light")
    set_light_pools(model, [1, 1])
    return model.eval()


def test_a_finer_pool_is_kept_where_held_out_data_says_it_is_better_and_nothing_else_changes():
    model = coarse_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    refitted, report = refit_light_exits(model, band_dataset(256, 0), band_dataset(128, 1), pool=4,
                                         epochs=30, batch_size=64, lr=1e-2, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input network is untouched
    assert [r.exit for r in report] == [0, 1] and report[0].map_size == (16, 16)  # b_alexnet's first block pools
    first = report[0]
    assert first.old_pool == 1 and first.new_pool == 4 and first.new_accuracy > first.old_accuracy + 0.3
    assert first.kept and refitted.exits[0].pool == 4
    for r in report:  # a head is replaced exactly when it scored higher on the held-out split
        assert (refitted.exits[r.exit].pool == r.new_pool) == (r.new_accuracy > r.old_accuracy)
    # the backbone and the final exit are the same weights
    for name, value in model.state_dict().items():
        if not name.startswith(("exits.0.", "exits.1.")):
            assert torch.equal(refitted.state_dict()[name], value)


def test_the_folded_head_equals_pooling_then_the_fitted_layer():
    """The refitted head takes raw pooled features: the standardisation is folded into its weights."""
    model = coarse_model()
    data = band_dataset(128, 2)
    refitted, _ = refit_light_exits(model, data, data, pool=4, epochs=2, progress=False)
    head = refitted.exits[0]
    assert isinstance(head, LightBranch) and head.linear.in_features == head.in_channels * 16
    with torch.no_grad():
        h = refitted.blocks[0](data.images[:5])
        expected = torch.nn.functional.linear(torch.nn.functional.adaptive_avg_pool2d(h, 4).flatten(1),
                                              head.linear.weight, head.linear.bias)
        torch.testing.assert_close(head(h), expected)


def test_a_refitted_checkpoint_reloads_with_its_pools(tmp_path):
    model = coarse_model()
    refitted, _ = refit_light_exits(model, band_dataset(128, 0), band_dataset(64, 1), pool=4, epochs=3,
                                    progress=False)
    pools = [refitted.exits[i].pool for i in light_exits(refitted)]
    spec = {"name": "b_alexnet", "num_classes": 3, "in_channels": 3, "width": 0.125, "exit_head": "light",
            "exit_pools": pools}
    save_checkpoint(tmp_path / "r.pt", refitted, spec)
    restored, _ = load_checkpoint(tmp_path / "r.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(restored(x), refitted(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("pools, message", [
    ([4], r"exit_pools has 1 entries for 2 light exits"),  # the skeleton refuses it
    ([4, 0], r"exit_pools must be a list of whole numbers in 1\.\.32"),
    ([4, True], r"exit_pools must be a list of whole numbers"),
    ("4", r"exit_pools must be a list"),
])
def test_a_bad_exit_pools_spec_is_refused_naming_it(tmp_path, pools, message):
    spec = {"name": "b_alexnet", "num_classes": 3, "in_channels": 3, "width": 0.125, "exit_head": "light"}
    model = build("b_alexnet", num_classes=3, in_channels=3, width=0.125, exit_head="light")
    save_checkpoint(tmp_path / "m.pt", model, spec | {"exit_pools": pools})
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tmp_path / "m.pt")


def test_exit_pools_need_light_exits(tmp_path):
    model = build("b_alexnet", num_classes=3, in_channels=3, width=0.125)
    save_checkpoint(tmp_path / "m.pt", model, {"name": "b_alexnet", "num_classes": 3, "in_channels": 3,
                                               "width": 0.125, "exit_pools": [4, 4]})
    with pytest.raises(ValueError, match=r"one per light exit \(exit_head 'light'\)"):
        load_checkpoint(tmp_path / "m.pt")


@pytest.mark.parametrize("kwargs, message", [
    ({"pool": 0}, r"pool must be a whole number in 1\.\.32, got 0"),
    ({"pool": 2.0}, r"pool must be a whole number in 1\.\.32, got 2\.0"),
    ({"epochs": 0}, r"epochs must be a whole number >= 1, got 0"),
])
def test_bad_settings_are_refused_naming_them(kwargs, message):
    data = band_dataset(16, 0)
    with pytest.raises(ValueError, match=message):
        refit_light_exits(coarse_model(), data, data, progress=False, **kwargs)


def test_a_network_without_light_exits_is_refused():
    data = band_dataset(16, 0)
    paper = build("b_alexnet", num_classes=3, in_channels=3, width=0.125)
    with pytest.raises(ValueError, match="no light exits to refit"):
        refit_light_exits(paper, data, data, progress=False)
    with pytest.raises(TypeError, match="needs a MultiExitNetwork, got Linear"):
        refit_light_exits(torch.nn.Linear(2, 2), data, data, progress=False)


def test_a_light_head_refuses_a_bad_pool():
    with pytest.raises(ValueError, match=r"pool must be a whole number in 1\.\.32, got 33"):
        LightBranch(4, 10, pool=33)
