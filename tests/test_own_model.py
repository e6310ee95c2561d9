"""Your own data and your own model: torch Datasets and DataLoaders wherever einet takes data; a user's
torchvision-style network converted with named exits, trained (branches on a frozen backbone) from the
CLI, profiled, served by the runtime; checkpoints that name a constructor and never run code unasked."""

from __future__ import annotations

import gzip
import json
import struct
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from einet import cli  # noqa: E402
from einet.data import ImageArrays, ImageDataset, as_batches, count_batches, shard_indices  # noqa: E402
from einet.formats.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from einet.models import ConversionError, convert  # noqa: E402
from einet.models.constructor import build_converted  # noqa: E402
from einet.profiling import profile_cs  # noqa: E402
from einet.training import TrainConfig, exit_accuracies, train  # noqa: E402

# A user's package: a torchvision-style ResNet (BasicBlock, layer1..3, avgpool, fc) and a ConvNeXt-style
# network (a functional layer norm reading its weights directly, a layer scale), with a call counter.
NETS = '''
import torch
import torch.nn.functional as F
from torch import nn

CALLS = []


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, width=8, depth=(1, 1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], width
        for i, count in enumerate(depth):
            cout = width * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock(cin if k == 0 else cout, cout, 2 if i and not k else 1)
                                          for k in range(count)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet(**kwargs):
    CALLS.append(kwargs)
    return ResNet(**kwargs)


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))

    def forward(self, x):
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXt(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), LayerNorm2d(16)), CNBlock(16),
                                      nn.Sequential(LayerNorm2d(16), nn.Conv2d(16, 32, 2, stride=2)), CNBlock(32))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(32), nn.Flatten(1), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))
'''

MODULE = "einet_user_nets"


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("userpkg")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(NETS))
    sys.path.insert(0, str(folder))
    try:
        import importlib

        yield importlib.import_module(MODULE)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MODULE, None)


# ---------------------------------------------------------------- part 1: any data source

def arrays(count: int = 48, size: int = 12, channels: int = 1) -> ImageArrays:
    """Three separable classes: bright top, bright left, dark."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 3
    images = rng.integers(0, 40, (count, size, size, channels), dtype=np.uint8)
    images[labels == 0, : size // 2] += 200
    images[labels == 1, :, : size // 2] += 200
    return ImageArrays(images, labels.astype(np.int64), ("top", "left", "dark"))


class UserDataset(Dataset):
    """What users write: a map-style Dataset of (CHW float tensor, int label)."""

    def __init__(self, data: ImageDataset) -> None:
        self.images, self.labels = data.images.clone(), data.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def test_image_dataset_batches_are_unchanged():
    data = ImageDataset(arrays(), augment=True)
    old = list(data.batches(10, shuffle=True, generator=torch.Generator().manual_seed(3)))
    new = list(as_batches(data, 10, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(old, new))
    plain = next(iter(as_batches(data, 48, augment=False)))[0]
    assert torch.equal(plain, data.images) and data.augment  # no augmentation, the flag untouched


def test_a_torch_dataset_and_a_dataloader_give_the_same_batches():
    data = ImageDataset(arrays())
    user = UserDataset(data)
    for source in (user, DataLoader(user, batch_size=10)):
        images, labels = zip(*as_batches(source, 10))
        assert torch.equal(torch.cat(images), data.images) and torch.equal(torch.cat(labels), data.labels)
        assert torch.cat(labels).dtype == torch.int64
        assert count_batches(source, 10) == 5
    shuffled = torch.cat([y for _, y in as_batches(user, 7, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert sorted(shuffled.tolist()) == sorted(data.labels.tolist()) and not torch.equal(shuffled, data.labels)


@pytest.mark.parametrize(("size", "world"), [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_shards_are_disjoint_cover_everything_and_have_equal_sizes(size, world):
    shards = [shard_indices(size, True, torch.Generator().manual_seed(5), rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1
    every = torch.cat(shards).tolist()
    assert set(every) == set(range(size)) and len(every) == -(-size // world) * world
    unpadded = [shard_indices(size, True, torch.Generator().manual_seed(5), rank, world, pad=False)
                for rank in range(world)]
    assert sorted(torch.cat(unpadded).tolist()) == list(range(size))
    with pytest.raises(ValueError, match="rank"):
        shard_indices(size, rank=world, world_size=world)


def test_unusable_sources_are_named():
    with pytest.raises(TypeError, match="cannot draw batches from a int"):
        list(as_batches(3, 4))

    class Pictures(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return [[0.0]], 1

    with pytest.raises(TypeError, match="not tensors: add a to-tensor transform"):
        list(as_batches(Pictures(), 2))


def test_train_evaluate_and_profile_take_a_dataset_or_a_dataloader():
    data = ImageDataset(arrays())
    user = UserDataset(data)
    from einet.models import build

    for source in (user, DataLoader(user, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))):
        torch.manual_seed(0)
        model = build("b_alexnet", num_classes=3, in_channels=1, width=0.125)
        config = TrainConfig(epochs=3, batch_size=16, optimizer="adam", lr=3e-3, schedule="constant")
        history = train(model, source, user, config, progress=False)
        assert len(history.loss) == 3 and history.test_accuracy[-1][-1] > 0.6
        assert exit_accuracies(model, user) == pytest.approx(exit_accuracies(model, data))
        assert exit_accuracies(model, DataLoader(user, batch_size=5)) == pytest.approx(exit_accuracies(model, data))
        profile = profile_cs(model, source if isinstance(source, Dataset) else DataLoader(user, batch_size=9),
                             progress=False)
        assert profile.num_samples == 48 and np.array_equal(profile.labels, data.labels.numpy())
        assert np.allclose(profile.accuracy_per_exit(), exit_accuracies(model, data))


# ---------------------------------------------------------------- part 2: your own model

def test_named_exits_convert_a_torchvision_style_resnet(nets):
    torch.manual_seed(0)
    original = nets.ResNet(num_classes=10, in_channels=3, width=8).eval()
    x = torch.randn(4, 3, 32, 32)
    model = convert(original, x, exits=["layer1", "layer2"])
    assert model.num_exits == 3  # a branch after layer1 and after layer2, then the original head
    with torch.no_grad():
        outputs = model.eval()(x)
        assert (outputs[-1] - original(x)).abs().max() <= 1e-5
        h = x
        for i in range(3):
            h = model.forward_block(i, h)
            assert torch.equal(model.forward_exit(i, h), outputs[i])
    assert model.blocks[0](x).shape == (4, 8, 32, 32) and model.blocks[1](model.blocks[0](x)).shape[1] == 16
    assert original.training is False and model.training is False
    automatic = convert(original, x)
    assert automatic.num_exits > 3  # the default: a cut after every conv region, residual blocks kept whole


@pytest.mark.parametrize(("exits", "message"), [
    (["layer9"], "no module named 'layer9'"),
    (["layer2", "layer1"], "in the order the model runs them"),
    (["layer1.0.conv1"], "would split the network"),
    (["fc"], "not a feature map"),
    (["layer1", "layer1.0"], "lies inside exit 'layer1'"),
    (["layer1", "layer1"], "named twice"),
    ([], "exits is empty"),
    ("layer1", "list of module names"),
])
def test_bad_exit_names(nets, exits, message):
    with pytest.raises(ConversionError, match=message):
        convert(nets.ResNet(), torch.randn(2, 3, 32, 32), exits=exits)


def test_functional_layer_norm_and_layer_scale_convert(nets):
    """ConvNeXt-style: weights read straight from the graph used to leave blocks with extra inputs (TypeError)."""
    torch.manual_seed(0)
    original = nets.ConvNeXt().eval()
    x = torch.randn(3, 3, 32, 32)
    model = convert(original, x).eval()
    with torch.no_grad():
        assert (model(x)[-1] - original(x)).abs().max() <= 1e-5
    names = set(dict(model.named_parameters()))
    assert any("layer_scale" in name for name in names)
    named = convert(original, x, exits=["features.1", "features.3"])
    with torch.no_grad():
        assert named.num_exits == 3 and (named.eval()(x)[-1] - original(x)).abs().max() <= 1e-5


def test_failures_inside_conversion_are_conversion_errors():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            for _ in range(int(x.sum() > 0)):
                x = x * 2
            return self.fc(self.conv(x).mean((2, 3)))

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="cannot trace Untraceable"):
        convert(Untraceable(), torch.randn(2, 3, 8, 8))
    with pytest.raises(ConversionError, match=r"the exits return \[\(2, 5\), \(2, 2\)\], not \[batch, 5\]"):
        convert(plain, torch.randn(2, 3, 8, 8), num_classes=5)
    with pytest.raises(ConversionError, match="cannot convert Sequential: RuntimeError"):
        convert(plain, torch.randn(2, 5, 8, 8))  # an example input the model cannot take


def save_converted(nets, path: Path, **kwargs) -> tuple[object, dict]:
    torch.manual_seed(0)
    model, spec = build_converted(f"{MODULE}:resnet", {"width": 4, "in_channels": 1, "num_classes": 3},
                                  torch.randn(2, 1, 12, 12), ["layer1", "layer2"])
    spec.update(kwargs)
    save_checkpoint(path, model, spec)
    return model, spec


def test_a_converted_checkpoint_loads_only_when_its_constructor_is_named_or_trusted(nets, tmp_path):
    model, spec = save_converted(nets, tmp_path / "c.pt")
    assert spec == {"name": "converted", "constructor": f"{MODULE}:resnet",
                    "kwargs": {"width": 4, "in_channels": 1, "num_classes": 3}, "exits": ["layer1", "layer2"],
                    "input_shape": [1, 12, 12], "num_classes": 3}
    nets.CALLS.clear()
    with pytest.raises(ValueError, match=f"converted from {MODULE}:resnet; rebuilding it imports that module"):
        load_checkpoint(tmp_path / "c.pt")
    assert nets.CALLS == []
    with pytest.raises(ValueError, match=f"from {MODULE}:resnet, not from {MODULE}:ResNet"):
        load_checkpoint(tmp_path / "c.pt", constructor=f"{MODULE}:ResNet")
    assert nets.CALLS == []
    x = torch.randn(3, 1, 12, 12)
    expected = [o.detach() for o in model.eval()(x)]
    for options in ({"constructor": f"{MODULE}:resnet"}, {"trust_constructor": True},
                    {"constructor": nets.resnet}):
        restored, state = load_checkpoint(tmp_path / "c.pt", **options)
        assert state["spec"] == spec
        with torch.no_grad():
            assert all(torch.equal(a, b) for a, b in zip(restored(x), expected))


@pytest.mark.parametrize(("changes", "message"), [
    ({"kwargs": {"width": {1: 2}}}, "plain JSON"),
    ({"kwargs": {"width": [1] * 5000}}, "plain JSON"),
    ({"kwargs": "width=4"}, "plain JSON"),
    ({"exits": "layer1"}, "spec exits"),
    ({"exits": [3]}, "spec exits"),
    ({"input_shape": [1, 10**6, 10**6]}, "input_shape"),
    ({"input_shape": [1, 0, 12]}, "input_shape"),
    ({"num_classes": 0}, "num_classes"),
    ({"constructor": 7}, "name its constructor"),
    ({"code": "print(1)"}, "unknown spec key 'code'"),
    ({"kwargs": {"width": 8, "in_channels": 1, "num_classes": 3}}, r"has shape"),  # a larger model than stored
    ({"exits": ["layer1"]}, r"missing|unexpected"),
    ({"constructor": "os:system"}, "not from"),
])
def test_converted_specs_are_checked_before_the_real_build(nets, tmp_path, changes, message):
    save_converted(nets, tmp_path / "c.pt", **changes)
    real = []
    original = nets.resnet

    def counting(**kwargs):
        real.append(torch.get_default_device().type)
        return original(**kwargs)

    with pytest.raises(ValueError, match=message) as caught:
        load_checkpoint(tmp_path / "c.pt", constructor=counting if "constructor" not in changes else
                        f"{MODULE}:resnet")
    assert "c.pt" in str(caught.value)
    assert "cpu" not in real  # at most the meta-device skeleton was built


def test_resolving_a_constructor_name():
    from einet.models.constructor import resolve_constructor

    assert resolve_constructor("torch.nn:Identity") is nn.Identity
    for bad in ("collections", "collections:", "a b:c", "os:system;x", "../x:y"):
        with pytest.raises(ValueError, match=r"package\.module:callable"):
            resolve_constructor(bad)
    with pytest.raises(ValueError, match="cannot import"):
        resolve_constructor("no_such_module_einet:f")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        resolve_constructor("collections:nothing")


def write_idx(path: Path, array: np.ndarray) -> None:
    kind = 0x08
    header = struct.pack(">BBBB", 0, 0, kind, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def tiny_mnist(root: Path, train: int = 120, test: int = 60) -> Path:
    """MNIST-format files of three separable classes (12 x 12 pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        data = arrays(count)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", data.images[..., 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", data.labels)
    return root


def test_cli_trains_branches_of_a_users_resnet_on_its_frozen_backbone_then_profiles_and_serves(
        nets, tmp_path, capsys, monkeypatch):
    from einet.policies import EveryExit
    from einet.runtime import ElasticRuntime

    data = tiny_mnist(tmp_path / "mnist")
    kwargs = {"width": 4, "in_channels": 1, "num_classes": 10}
    torch.manual_seed(5)
    original = nets.ResNet(**kwargs)
    original.train()
    with torch.no_grad():  # give the BN statistics something other than their defaults
        original(torch.randn(16, 1, 12, 12))
    original.eval()
    torch.save(original.state_dict(), tmp_path / "backbone.pt")
    common = ["--dataset", "mnist", "--data", str(data), "--constructor", f"{MODULE}:resnet"]
    argv = ["train", *common, "--constructor-kwargs", json.dumps(kwargs), "--exits", "layer1", "layer2",
            "--freeze-backbone", "--backbone-weights", str(tmp_path / "backbone.pt"), "--epochs", "2",
            "--batch-size", "16", "--threads", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "m.pt")]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "m.summary.json").read_text())
    assert summary["world_size"] == 1 and summary["freeze_backbone"] is True
    assert summary["model"]["constructor"] == f"{MODULE}:resnet" and len(summary["test_accuracy_per_exit"]) == 3
    model, state = load_checkpoint(tmp_path / "m.pt", constructor=f"{MODULE}:resnet")
    x = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        assert (model(x)[-1] - original(x)).abs().max() <= 1e-5  # the backbone and its head kept their weights
    assert state["history"]["loss"][-1] < state["history"]["loss"][0]  # the branches learned
    # Resuming (same settings) finds everything done; profiling needs the constructor named again.
    assert cli.main(argv) == 0
    capsys.readouterr()
    profile = ["profile", "--dataset", "mnist", "--data", str(data), "--checkpoint", str(tmp_path / "m.pt"),
               "--out-dir", str(tmp_path / "profiles"), "--warmup", "1", "--repeats", "3", "--threads", "1",
               "--device", "cpu", "--quiet"]
    assert cli.main(profile) == 2
    assert "--constructor" in capsys.readouterr().err
    assert cli.main([*profile, "--constructor", f"{MODULE}:resnet"]) == 0
    assert (tmp_path / "profiles" / "cs-test.npz").exists() and (tmp_path / "profiles" / "et.npz").exists()
    with ElasticRuntime(model, EveryExit()) as runtime:
        answer = runtime.infer(x[:1])
    assert answer.exit == 2 and answer.prediction == int(model(x[:1])[-1].argmax())


def test_cli_constructor_mistakes(nets, tmp_path, capsys):
    data = tiny_mnist(tmp_path / "mnist")
    base = ["train", "--dataset", "mnist", "--data", str(data), "--epochs", "1", "--threads", "1", "--device", "cpu",
            "--quiet", "--out", str(tmp_path / "m.pt")]
    cases = [
        (["--exits", "layer1"], "go with --constructor"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", "{width: 4}"], "not JSON"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", "[4]"], "JSON object"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", '{"in_channels": 1, "num_classes": 3}'],
         "returns 3 classes but the dataset has 10"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", '{"in_channels": 1}', "--exits", "layer7"],
         "no module named 'layer7'"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", '{"depth_": 1}'], "failed: TypeError"),
        (["--constructor", "einet_no_such_module:f"], "cannot import"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", '{"in_channels": 1}', "--backbone-weights",
          str(tmp_path / "wide.pt")], "do not fit ResNet"),
        (["--constructor", f"{MODULE}:resnet", "--constructor-kwargs", '{"in_channels": 1}', "--backbone-weights",
          str(tmp_path / "junk.pt")], "not a readable state_dict"),
    ]
    torch.save({"state_dict": nets.ResNet(in_channels=1, width=16).state_dict()}, tmp_path / "wide.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    for extra, message in cases:
        assert cli.main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra


def test_a_users_network_goes_from_constructor_to_bundle_to_real_time_answers_by_the_cli_alone(
        nets, tmp_path, capsys):
    import io
    import zipfile

    from PIL import Image

    from einet.data import load_mnist

    data = tiny_mnist(tmp_path / "mnist")
    config = tmp_path / "mine.toml"
    config.write_text(textwrap.dedent(f"""
        name = "my-resnet"
        [data]
        dataset = "mnist"
        path = "mnist"
        holdout = 0.25
        [network]
        constructor = "{MODULE}:resnet"
        kwargs = {{ width = 4, in_channels = 1, num_classes = 10 }}
        exits = ["layer1", "layer2"]
        [train]
        epochs = 2
        batch_size = 16
        [profile]
        repeats = 10
        warmup = 2
        [select]
        predictor_epochs = 3
        [output]
        bundle = "mine.einet"
        """))
    capsys.readouterr()
    assert cli.main(["build", str(config), "--quiet"]) == 2  # a config runs no code its reader did not name
    assert f"--constructor {MODULE}:resnet" in capsys.readouterr().err
    assert not (tmp_path / "mine.einet").exists()
    assert cli.main(["build", str(config), "--quiet", "--constructor", f"{MODULE}:resnet"]) == 0
    test = load_mnist(data, "test")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for k in range(len(test)):
            buffer = io.BytesIO()
            Image.fromarray(test.images[k, :, :, 0]).save(buffer, format="png")
            archive.writestr(f"{test.classes[test.labels[k]]}/{k:03d}.png", buffer.getvalue())
    run = ["run", str(tmp_path / "mine.einet"), "--images", str(tmp_path / "images.zip"), "--warmup", "2", "--quiet"]
    capsys.readouterr()
    assert cli.main(run) == 2  # loading it imports the user's module: only when named
    assert f"--constructor {MODULE}:resnet" in capsys.readouterr().err
    assert cli.main([*run, "--constructor", f"{MODULE}:resnet", "--out", str(tmp_path / "answers.csv")]) == 0
    assert f"{len(test)} images" in capsys.readouterr().out
    assert len((tmp_path / "answers.csv").read_text().splitlines()) == len(test) + 1


class _Routed(nn.Module):
    """A block whose forward branches on the data: fx cannot trace it, so it runs whole in one block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.abs().mean() > 1e6 else torch.relu(self.conv(x)) + x


class _WithOptions(nn.Module):
    def __init__(self, reads_option: bool = False) -> None:
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), _Routed(8), _Routed(8)
        self.fc = nn.Linear(8, 10)
        self.reads_option = reads_option

    def forward(self, x: torch.Tensor, scale: float = 1.0, pre_logits: bool = False) -> torch.Tensor:
        h = self.b(self.a(torch.relu(self.stem(x)))).mean((2, 3))
        if self.reads_option:
            h = h * scale  # the option is part of the computation: converting at its default would hide it
        return h if pre_logits else self.fc(h)


def test_untraceable_blocks_run_whole_and_optional_arguments_take_their_defaults():
    torch.manual_seed(0)
    model = _WithOptions().eval()
    x = torch.randn(2, 3, 16, 16)
    network = convert(model, x)
    assert network.num_exits == 3  # after the stem, after each routed block (each traced as one call)
    with torch.no_grad():
        assert torch.allclose(network(x)[-1], model(x), atol=1e-5)
    named = convert(model, x, exits=["a"])
    assert named.num_exits == 2


def test_options_are_converted_at_their_defaults_and_a_forward_that_branches_itself_is_refused():
    x = torch.randn(2, 3, 16, 16)
    model = _WithOptions(reads_option=True).eval()
    with torch.no_grad():
        assert torch.allclose(convert(model, x)(x)[-1], model(x), atol=1e-5)  # scale = 1.0, as model(x) runs

    class Branching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x)
            return h.mean((2, 3)) if h.mean() > 0 else -h.mean((2, 3))

    with pytest.raises(ConversionError, match="cannot trace Branching"):
        convert(Branching().eval(), x)
