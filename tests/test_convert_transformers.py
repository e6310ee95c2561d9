"""Vision transformers convert into multi-exit networks: a cut after each block, a token exit per cut, the
model's own head last (exact); and a model with fewer than two cut points is refused, not silently given
one exit. The models below follow timm's ViT / DeiT structure and names at tiny sizes (timm itself needs
torchvision, which einet does not depend on)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from einet.data import ImageArrays, ImageDataset  # noqa: E402
from einet.formats.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from einet.models import ConversionError, convert  # noqa: E402
from einet.models.constructor import build_converted  # noqa: E402
from einet.models.convert_tokens import TokenBranch  # noqa: E402
from einet.profiling import profile_cs  # noqa: E402
from einet.training import TrainConfig, exit_accuracies, train  # noqa: E402

DEPTH = 12


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))  # [B, C, H, W] -> [B, N, C]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's VisionTransformer: class token(s), position embedding, `blocks`, `norm`, `head`; `distilled`
    adds DeiT's distillation token and head (their mean at inference)."""

    def __init__(self, img_size: int = 16, patch_size: int = 4, in_chans: int = 3, num_classes: int = 5,
                 embed_dim: int = 16, depth: int = DEPTH, num_heads: int = 2, global_pool: str = "token",
                 distilled: bool = False) -> None:
        super().__init__()
        self.global_pool, self.num_prefix_tokens = global_pool, 2 if distilled else 1
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02) if distilled else None
        num_tokens = (img_size // patch_size) ** 2 + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.head_dist = nn.Linear(embed_dim, num_classes) if distilled else None

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        return self.pos_drop(torch.cat([*prefix, x], dim=1) + self.pos_embed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self._pos_embed(self.patch_embed(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_dist is not None:
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        x = x[:, self.num_prefix_tokens:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def vit(**kwargs: object) -> VisionTransformer:
    """A constructor, as a user's package would name it (``module:vit``)."""
    return VisionTransformer(**kwargs)  # type: ignore[arg-type]


class ListedBlocks(VisionTransformer):
    """The blocks in an nn.ModuleList that forward runs in order, as some ViT variants keep them."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(self.blocks))  # type: ignore[assignment]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pos_embed(self.patch_embed(x))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@pytest.mark.parametrize(("make", "pooling"), [
    (VisionTransformer, "class"),
    (lambda: VisionTransformer(global_pool="avg"), "mean"),
    (lambda: VisionTransformer(distilled=True), "class"),  # DeiT: the class and distillation heads averaged
    (ListedBlocks, "class"),
])
def test_a_vit_is_cut_after_every_block_and_its_last_exit_is_its_own_head(make, pooling):
    torch.manual_seed(0)
    original = make().eval()
    x = torch.randn(4, 3, 16, 16)
    model = convert(original, x)
    assert model.num_exits == DEPTH  # one cut after each block; the last exit is norm + pooling + head
    assert all(isinstance(branch, TokenBranch) and branch.pooling == pooling for branch in model.exits[:-1])
    with torch.no_grad():
        outputs = model(x)
        assert (outputs[-1] - original(x)).abs().max() <= 1e-5
        h = x
        for i in range(model.num_exits):
            h = model.forward_block(i, h)
            assert h.shape == (4, 16 + original.num_prefix_tokens, 16)  # tokens pass from block to block
            assert torch.equal(model.forward_exit(i, h), outputs[i])
    assert original.training is False and model.training is False


def test_named_exits_cut_a_vit_after_the_blocks_named():
    torch.manual_seed(0)
    original = VisionTransformer().eval()
    x = torch.randn(2, 3, 16, 16)
    model = convert(original, x, exits=["blocks.3", "blocks.7"])
    assert model.num_exits == 3 and isinstance(model.exits[0], TokenBranch)
    with torch.no_grad():
        assert (model(x)[-1] - original(x)).abs().max() <= 1e-5
    with pytest.raises(ConversionError, match=r"branch options \(pool_in\) shape the exits on feature maps"):
        convert(original, x, pool_in=4)


def test_a_converted_vit_trains_evaluates_profiles_and_reloads_like_a_converted_cnn(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    images = rng.integers(0, 40, (48, 16, 16, 3), dtype=np.uint8)  # three separable classes: bright top,
    images[labels == 0, :8] += 200  # bright left, dark
    images[labels == 1, :, :8] += 200
    data = ImageDataset(ImageArrays(images, labels.astype(np.int64), ("top", "left", "dark")))
    torch.manual_seed(0)
    model, spec = build_converted(f"{__name__}:vit", {"num_classes": 3, "depth": 4}, torch.randn(2, 3, 16, 16))
    config = TrainConfig(epochs=4, batch_size=16, optimizer="adam", lr=3e-3, schedule="constant")
    history = train(model, data, data, config, progress=False)
    assert len(history.loss) == 4 and history.loss[-1] < history.loss[0]
    accuracies = exit_accuracies(model, data)
    assert len(accuracies) == 4 and max(accuracies) > 0.6
    profile = profile_cs(model, data, progress=False)
    assert profile.num_samples == 48 and profile.accuracy_per_exit() == pytest.approx(accuracies)
    save_checkpoint(tmp_path / "vit.pt", model, spec)
    loaded, _ = load_checkpoint(tmp_path / "vit.pt", constructor=f"{__name__}:vit")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.eval()(x), model.eval()(x)))


class Flat(nn.Module):
    """A network with no conv layer and no blocks passing tokens: nowhere to cut."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3 * 16 * 16, 8), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class OneConv(nn.Module):
    """A conv stem, then fully connected layers: one cut point, after the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize(("make", "found"), [
    (Flat, r"found 0 cut points in Flat \(looked at no conv layers; no Sequential or ModuleList of blocks\)"),
    (OneConv, r"found 1 cut point in OneConv \(looked at conv layers stem; no Sequential"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5)),
     r"found 0 cut points in Sequential \(looked at no conv layers; block sequences Sequential \(2 blocks\)\)"),
])
def test_fewer_than_two_cut_points_are_refused_unless_a_single_exit_is_accepted(make, found):
    torch.manual_seed(0)
    original = make().eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ConversionError, match=found + ".*needs at least two.*single_exit='warn'"):
        convert(original, x)
    with pytest.warns(UserWarning, match=found + ".*single exit, no elasticity"):
        model = convert(original, x, single_exit="warn")
    assert model.num_exits == 1
    with torch.no_grad():
        assert (model(x)[-1] - original(x)).abs().max() <= 1e-6


def test_named_exits_that_leave_one_cut_are_refused_too_and_single_exit_is_checked():
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ConversionError, match=r"found 1 cut point in VisionTransformer \(after the modules named in "
                                              r"exits \(norm\)"):
        convert(VisionTransformer().eval(), x, exits=["norm"])
    with pytest.raises(ConversionError, match="single_exit must be one of refuse, warn, got 'yes'"):
        convert(OneConv(), x, single_exit="yes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two cut points or more: no warning, whatever single_exit says
        assert convert(VisionTransformer(depth=2).eval(), x, single_exit="warn").num_exits == 2
