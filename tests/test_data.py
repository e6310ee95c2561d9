"""Dataset loaders on small synthetic files in each standard format, and on the real data when present."""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from einet import data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def fake_mnist(root: Path, compress: bool, count: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("fashion", [False, True])
def test_mnist_idx(tmp_path, compress, fashion):
    images, labels = fake_mnist(tmp_path, compress)
    split = data.load_mnist(tmp_path, "test", fashion=fashion)
    assert split.images.shape == (12, 28, 28, 1)
    np.testing.assert_array_equal(split.images[..., 0], images)
    np.testing.assert_array_equal(split.labels, labels)
    assert split.num_classes == 10
    assert (split.classes[0] == "T-shirt/top") == fashion


def test_idx_errors(tmp_path):
    fake_mnist(tmp_path, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(data.DatasetError, match="needs"):
        data.load_mnist(tmp_path, "test")
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(data.DatasetError, match="not an IDX file"):
        data.read_idx(path)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-6])
    with pytest.raises(data.DatasetError, match="corrupt or truncated"):
        data.read_idx(gz)
    with pytest.raises(data.DatasetError, match="missing"):
        data.load_mnist(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_mnist(tmp_path, "validation")


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def fake_cifar10(root: Path) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (6, 4, 3072), dtype=np.uint8)
    for i in range(5):
        write_pickle(folder / f"data_batch_{i + 1}", {b"data": rows[i], b"labels": [0, 1, 2, 9]})
    write_pickle(folder / "test_batch", {b"data": rows[5], b"labels": [3, 3, 4, 5]})
    write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return rows


def test_cifar10_batches(tmp_path):
    rows = fake_cifar10(tmp_path)
    train = data.load_cifar10(tmp_path, "train")
    test = data.load_cifar10(tmp_path, "test")
    assert train.images.shape == (20, 32, 32, 3)
    assert test.labels.tolist() == [3, 3, 4, 5]
    # The python-version layout is channel-planar: the first 1024 bytes are the red plane.
    np.testing.assert_array_equal(test.images[0, :, :, 0].ravel(), rows[5, 0, :1024])
    assert train.classes[9] == "c9"


def test_cifar100_batches(tmp_path):
    rng = np.random.default_rng(2)
    for split in ("train", "test"):
        write_pickle(tmp_path / split, {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                                        b"fine_labels": [0, 50, 99], b"coarse_labels": [0, 1, 2]})
    write_pickle(tmp_path / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    test = data.load_cifar100(tmp_path, "test")
    assert test.num_classes == 100
    assert test.labels.tolist() == [0, 50, 99]


def test_cifar_errors(tmp_path):
    fake_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:50])
    with pytest.raises(data.DatasetError, match="not a readable CIFAR batch"):
        data.load_cifar10(tmp_path, "test")

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    write_pickle(folder / "test_batch", {b"data": Evil()})
    with pytest.raises(data.DatasetError, match=r"refusing to load builtins\.print"):
        data.load_cifar10(tmp_path, "test")
    write_pickle(folder / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(data.DatasetError, match=r"\[N, 3072\]"):
        data.load_cifar10(tmp_path, "test")


def write_png_folder(root: Path, sizes=((8, 8),)) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        for label in ("cat", "ant", "bee"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for k in range(2):
                size = sizes[k % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{k}.png")


@pytest.mark.parametrize("as_zip", [False, True])
def test_image_folder(tmp_path, monkeypatch, as_zip):
    monkeypatch.setenv("EINET_CACHE", str(tmp_path / "cache"))
    write_png_folder(tmp_path / "set")
    source = tmp_path / "set"
    if as_zip:
        source = tmp_path / "set.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for path in sorted((tmp_path / "set").rglob("*.png")):
                archive.write(path, Path("prefix") / path.relative_to(tmp_path / "set"))
    train = data.load_image_folder(source, "train")
    assert train.classes == ("ant", "bee", "cat")  # sorted: the standard label order
    assert train.images.shape == (6, 8, 8, 3)
    assert sorted(train.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert list((tmp_path / "cache").glob("*.npz"))
    again = data.load_image_folder(source, "train")
    np.testing.assert_array_equal(again.images, train.images)


def test_image_folder_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EINET_CACHE", str(tmp_path / "cache"))
    write_png_folder(tmp_path / "mixed", sizes=((8, 8), (9, 9)))
    with pytest.raises(data.DatasetError, match="differ in size"):
        data.load_image_folder(tmp_path / "mixed", "train", cache=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetError, match="no images"):
        data.load_image_folder(tmp_path / "empty", "train")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(data.DatasetError, match="neither a directory nor a readable zip"):
        data.load_image_folder(tmp_path / "bad.zip", "train")
    broken = tmp_path / "broken" / "train" / "a"
    broken.mkdir(parents=True)
    (broken / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(data.DatasetError, match="cannot decode image"):
        data.load_image_folder(tmp_path / "broken", "train", cache=False)


def test_split_and_dataset():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    arrays = data.ImageArrays(rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8), np.arange(50) % 5,
                              tuple("abcde"))
    kept, held = arrays.split(0.2, seed=1)
    assert len(kept) == 40 and len(held) == 10
    assert not set(map(bytes, kept.images)) & set(map(bytes, held.images))
    dataset = data.ImageDataset(arrays, augment=True, pad=2)
    assert abs(float(dataset.images.mean())) < 1e-5
    batches = list(dataset.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    assert batches[0][0].shape == (16, 3, 8, 8)
    with pytest.raises(ValueError, match="fraction"):
        arrays.split(1.5)


@pytest.mark.skipif(not (SHARED / "mnist").exists(), reason="../shared/data is not here")
def test_real_mnist():
    test = data.load_mnist(SHARED / "mnist", "test")
    assert test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(test.labels).min() > 800


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg.zip").exists(), reason="../shared/data is not here")
def test_real_cifar10():
    test = data.load("cifar10", SHARED / "cifar10-jpeg.zip", "test")
    assert test.images.shape == (10000, 32, 32, 3)
    assert test.classes[:3] == ("airplane", "automobile", "bird")
    assert np.bincount(test.labels).tolist() == [1000] * 10
