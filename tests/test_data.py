"""Dataset loaders on small synthetic files in each standard format, and on the real data when present."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import hmac
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from contextlib import contextmanager
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


def write_idx_gz(path: Path, shape: tuple[int, ...], payload_bytes: int) -> None:
    """A gzipped uint8 IDX file declaring `shape`, followed by `payload_bytes` zeros (written in 1 MiB chunks)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape))
        for start in range(0, payload_bytes, 1 << 20):
            f.write(bytes(min(1 << 20, payload_bytes - start)))


def assert_refused_cheaply(call, match: str, budget: int = 8 << 20) -> None:
    """call() raises a DatasetError matching `match` without allocating `budget` bytes on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(data.DatasetError, match=match):
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < budget, f"allocated {peak} bytes before refusing"


def test_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    # 64 MiB of zeros behind a header that declares 10 bytes: reading stops after 11.
    write_idx_gz(tmp_path / "bomb.gz", (10,), 64 << 20)
    assert_refused_cheaply(lambda: data.read_idx(tmp_path / "bomb.gz"), "holds more than 10 bytes")
    # The same payload, declared honestly, but above the cap: refused from the header alone.
    write_idx_gz(tmp_path / "large.gz", (64, 1024, 1024), 64 << 20)
    monkeypatch.setattr(data.limits, "MAX_IDX_BYTES", 1 << 20)
    assert_refused_cheaply(lambda: data.read_idx(tmp_path / "large.gz"), "above MAX_IDX_BYTES")


def test_a_cap_raised_in_limits_is_the_one_the_loaders_read(tmp_path, monkeypatch):
    write_idx_gz(tmp_path / "large.gz", (64, 1024), 64 << 10)
    monkeypatch.setattr(data.limits, "MAX_IDX_BYTES", 1 << 10)
    with pytest.raises(data.DatasetError, match=r"MAX_IDX_BYTES = 1024; .* raise einet\.data\.limits\.MAX_IDX_BYTES"):
        data.read_idx(tmp_path / "large.gz")
    monkeypatch.setattr(data.limits, "MAX_IDX_BYTES", 1 << 30)
    assert data.read_idx(tmp_path / "large.gz").shape == (64, 1024)


def test_idx_header_claiming_a_huge_shape_is_refused(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + b"tiny")
    assert_refused_cheaply(lambda: data.read_idx(path), r"\(4294967295, 4294967295, 4294967295\).*MAX_IDX_BYTES")


def test_idx_corrupt_deflate_stream(tmp_path):
    stream = bytearray(gzip.compress(bytes([0, 0, 0x08, 1, 0, 0, 0, 5]) + b"abcde"))
    stream[10:14] = b"\xff" * 4  # the deflate data starts after the 10-byte gzip header: an invalid block type
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(stream))
    with pytest.raises(data.DatasetError, match=r"corrupt\.gz is corrupt or truncated: error: .*invalid"):
        data.read_idx(path)


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
    with pytest.raises(data.DatasetError, match="not a readable CIFAR file"):
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


class Crafted:
    """Pickles as function(*args), then __setstate__(state): how a crafted file drives what the unpickler admits."""

    def __init__(self, function: object, *args: object, state: object = None) -> None:
        self.reduction = (function, args) if state is None else (function, args, state)

    def __reduce__(self):
        return self.reduction


ROW = np.zeros((1, 3072), np.uint8)
NAMES = {b"label_names": [f"c{i}".encode() for i in range(10)]}


@pytest.mark.parametrize(("batch", "meta", "match"), [
    ({b"data": Crafted(codecs.encode, "x", "no-such-codec"), b"labels": []}, NAMES, "refusing _codecs.encode"),
    ({b"data": ROW, b"labels": [2**70]}, NAMES, r"labels\[0\] is 1180591620717411303424, outside \[0, 10\)"),
    ({b"data": ROW}, NAMES, "no b'data' and b'labels' entries"),  # was TypeError
    ({b"data": ROW, b"labels": [[0, 1]]}, NAMES, r"labels\[0\] is a list, not an integer"),
    ({b"data": ROW, b"labels": [0, 1]}, NAMES, "labels must be a list .* of 1 class indices, got 2 items"),
    ({b"data": ROW, b"labels": [True]}, NAMES, r"labels\[0\] is a bool, not an integer"),
    ({b"data": ROW, b"labels": np.array([0.5])}, NAMES, r"labels must be .* got float64 \(1,\)"),
    ({b"data": ROW.tolist(), b"labels": [0]}, NAMES, "data must be a uint8 array .* got a list"),
    ({b"data": ROW, b"labels": [0]}, {b"label_names": [bytes([0xFF, i]) for i in range(10)]},
     "not a CIFAR meta file .*UnicodeDecodeError"),
    ({b"data": ROW, b"labels": [0]}, ["not a dict"], "not a CIFAR meta file with label_names"),
    ({b"data": ROW, b"labels": [0]}, {b"label_names": [b"same"] * 10}, r"label_names \(a list of distinct names\)"),
], ids=["codec", "overflow", "no-labels", "nested-labels", "label-count", "bool-label", "float-array-labels",
        "data-as-a-list", "undecodable-name", "meta-not-a-dict", "repeated-names"])
def test_cifar_bad_content_is_a_dataset_error_naming_the_file(tmp_path, batch, meta, match):
    fake_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    write_pickle(folder / "test_batch", batch)
    write_pickle(folder / "batches.meta", meta)
    with pytest.raises(data.DatasetError, match=match) as error:
        data.load_cifar10(tmp_path, "test")
    assert str(folder) in str(error.value)


@pytest.mark.parametrize(("data_entry", "match"), [
    # numpy's _reconstruct allocates whatever shape it is given (numpy itself always pickles (0,)).
    (Crafted(np.ndarray.__reduce__(np.zeros(0))[0], np.ndarray, (50_000_000,), b"b"), r"got uint8 \(0,\)"),
    # numpy's scalar() without data allocates (and zeroes) the itemsize its dtype claims.
    (Crafted(np.uint8(0).__reduce__()[0], np.dtype("V50000000")), "refusing numpy dtype 'V50000000'"),
    # An array state whose dtype holds objects but whose list is short: numpy read past it (a segfault).
    (Crafted(np.ndarray.__reduce__(np.zeros(0))[0], np.ndarray, (0,), b"b",
             state=(1, (1_000_000,), np.dtype(object), False, [1])), "refusing numpy dtype 'O8'"),
], ids=["reconstruct-shape", "scalar-without-data", "object-array"])
def test_cifar_pickle_cannot_allocate_more_than_it_holds(tmp_path, data_entry, match):
    fake_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": data_entry, b"labels": [0]})
    assert_refused_cheaply(lambda: data.load_cifar10(tmp_path, "test"), match)


def test_cifar_file_size_cap(tmp_path, monkeypatch):
    fake_cifar10(tmp_path)
    monkeypatch.setattr(data.limits, "MAX_CIFAR_FILE_BYTES", 1000)
    with pytest.raises(data.DatasetError, match=r"test_batch holds 12\d+ bytes, above MAX_CIFAR_FILE_BYTES = 1000"):
        data.load_cifar10(tmp_path, "test")


def test_cifar_labels_repeating_a_shared_list_are_refused_without_expanding_them(tmp_path):
    fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    shared = [0] * 50_000  # pickled once; every further use is a 2-byte reference to it
    write_pickle(path, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [[shared] * 200] * 4})
    assert path.stat().st_size < 200_000  # np.asarray of the labels: 4 x 200 x 50,000 int64 = 320 MB
    started = time.perf_counter()
    assert_refused_cheaply(lambda: data.load_cifar10(tmp_path, "test"), r"test_batch: labels\[0\] is a list")
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(("loader", "count", "image_bytes"), [
    ("mnist", 12, 28 * 28), ("cifar10", 20, 3072), ("folder", 6, 8 * 8 * 3), ("zip", 6, 8 * 8 * 3)])
def test_split_size_cap(tmp_path, monkeypatch, loader, count, image_bytes):
    split_bytes = count * (image_bytes + 8)  # uint8 images and int64 labels
    if loader == "mnist":
        fake_mnist(tmp_path, compress=False)
        load = lambda: data.load_mnist(tmp_path, "train")  # noqa: E731
    elif loader == "cifar10":
        fake_cifar10(tmp_path)
        load = lambda: data.load_cifar10(tmp_path, "train")  # noqa: E731
    else:
        write_png_folder(tmp_path / "set")
        source = tmp_path / "set"
        if loader == "zip":
            source = write_zip(tmp_path / "set.zip", {str(p.relative_to(source)): p.read_bytes()
                                                      for p in source.rglob("*.png")})
        load = lambda: data.load_image_folder(source, "train", cache=False)  # noqa: E731
    decoded = []
    monkeypatch.setattr(data.folder, "_pixels", lambda image: decoded.append(image) or np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setattr(data.limits, "MAX_DATASET_BYTES", split_bytes - 1)
    with pytest.raises(data.DatasetError, match=rf"holds {split_bytes} bytes, above MAX_DATASET_BYTES = "):
        load()
    assert not decoded  # an image folder is refused from the first image's header, before any decoding
    monkeypatch.setattr(data.limits, "MAX_DATASET_BYTES", split_bytes)
    assert len(load()) == count


def test_image_pixel_cap_is_checked_before_decoding(tmp_path, monkeypatch):
    write_png_folder(tmp_path / "set")
    decoded = []
    monkeypatch.setattr(data.folder, "_pixels", lambda image: decoded.append(image))
    monkeypatch.setattr(data.limits, "MAX_IMAGE_PIXELS", 8 * 8 - 1)
    with pytest.raises(data.DatasetError, match=r"0\.png holds 64 pixels, above MAX_IMAGE_PIXELS = 63"):
        data.load_image_folder(tmp_path / "set", "train", cache=False)
    assert not decoded


def python2_pickle(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the original CIFAR files hold it: pickled by Python 2 (protocol 2), whose str keys, dtype
    codes and array bytes unpickle as bytes."""
    def string(value: bytes) -> bytes:
        return b"U" + bytes([len(value)]) + value if len(value) < 256 else b"T" + struct.pack("<i", len(value)) + value

    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in rows.shape) + b"t"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
             + b"(K\x01" + shape + dtype + b"\x89" + string(rows.tobytes()) + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([n]) for n in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."


@pytest.mark.parametrize("labels", ["python2", "big-endian-array", "numpy-scalars"])
def test_cifar_pickle_layouts(tmp_path, labels):
    rows = fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    if labels == "python2":
        path.write_bytes(python2_pickle(rows[5], [3, 3, 4, 5]))
    elif labels == "big-endian-array":
        write_pickle(path, {b"data": rows[5], b"labels": np.array([3, 3, 4, 5], dtype=">i2")})
    else:
        write_pickle(path, {b"data": rows[5], b"labels": [np.int64(n) for n in (3, 3, 4, 5)]})
    test = data.load_cifar10(tmp_path, "test")
    assert test.labels.tolist() == [3, 3, 4, 5]
    np.testing.assert_array_equal(test.images[0, :, :, 0].ravel(), rows[5, 0, :1024])


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


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
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
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
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
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


@pytest.mark.parametrize("name", ["../train/a/x.png", "/train/a/x.png", "train/../../a/x.png", "C:/train/a/x.png",
                                  "..\\train\\a\\x.png"])
def test_zip_member_outside_the_archive_is_refused(tmp_path, name):
    image = png_bytes(np.zeros((4, 4, 3), np.uint8))
    source = write_zip(tmp_path / "set.zip", {"train/a/ok.png": image, name: image})
    with pytest.raises(data.DatasetError, match=r"set\.zip: refusing member .*an absolute or '\.\.' path"):
        data.load_image_folder(source, "train", cache=False)


@pytest.mark.parametrize(("offset", "value", "match"), [
    (8, 0x1, "RuntimeError: .*encrypted"),  # general-purpose flag bit 0: encrypted
    (10, 9, "NotImplementedError"),  # compression method 9: deflate64
], ids=["encrypted", "deflate64"])
def test_zip_member_that_cannot_be_read(tmp_path, offset, value, match):
    source = write_zip(tmp_path / "set.zip", {"train/a/x.png": png_bytes(np.zeros((4, 4, 3), np.uint8))})
    archive = bytearray(source.read_bytes())
    struct.pack_into("<H", archive, archive.find(b"PK\x01\x02") + offset, value)  # in the central directory
    source.write_bytes(bytes(archive))
    with pytest.raises(data.DatasetError, match=r"cannot decode image .*set\.zip:train/a/x\.png: " + match):
        data.load_image_folder(source, "train", cache=False)


def test_decompression_bomb_image(tmp_path, monkeypatch):
    from PIL import Image

    write_png_folder(tmp_path / "set")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 8x8 images are then over twice the limit
    with pytest.raises(data.DatasetError, match=r"cannot decode image .*\.png: DecompressionBombError"):
        data.load_image_folder(tmp_path / "set", "train", cache=False)


@pytest.mark.parametrize("as_zip", [False, True])
def test_image_file_size_cap(tmp_path, monkeypatch, as_zip):
    write_png_folder(tmp_path / "set")
    source = tmp_path / "set"
    if as_zip:
        source = write_zip(tmp_path / "set.zip", {str(p.relative_to(source)): p.read_bytes()
                                                  for p in source.rglob("*.png")})
    monkeypatch.setattr(data.limits, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(data.DatasetError, match=r"0\.png holds \d+ bytes, above MAX_IMAGE_BYTES = 100"):
        data.load_image_folder(source, "train", cache=False)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 255, 256, 40000, 65535]], dtype=np.uint16)
    folder = tmp_path / "set" / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "x.png").write_bytes(png_bytes(values))
    loaded = data.load_image_folder(tmp_path / "set", "train", cache=False)
    assert loaded.images.shape == (1, 1, 5, 1)
    assert loaded.images.ravel().tolist() == (values >> 8).ravel().tolist() == [0, 0, 1, 156, 255]


def test_cache_dir_location(tmp_path, monkeypatch):
    monkeypatch.delenv("EINET_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "einet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "einet"
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "mine"))
    assert data.cache_dir() == tmp_path / "mine"


@pytest.fixture
def cached_folder(tmp_path, monkeypatch):
    """(source, its decoded train split, the cache entry): an image folder loaded once through the cache."""
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
    write_png_folder(tmp_path / "set")
    arrays = data.load_image_folder(tmp_path / "set", "train")
    (entry,) = (tmp_path / "cache").glob("*.npz")
    return tmp_path / "set", arrays, entry


def test_truncated_cache_entry_is_rebuilt(cached_folder):
    source, arrays, entry = cached_folder
    entry.write_bytes(entry.read_bytes()[:300])
    with pytest.warns(UserWarning, match="rebuilding the invalid cache entry"):
        again = data.load_image_folder(source, "train")
    np.testing.assert_array_equal(again.images, arrays.images)
    np.testing.assert_array_equal(data.load_image_folder(source, "train").images, arrays.images)  # no warning now


def signed_entry(arrays: data.ImageArrays, fingerprint: str, mac: object) -> bytes:
    """A cache entry as einet writes one: mac(the .npz) + the .npz (of the arrays and the source's fingerprint)."""
    npz = io.BytesIO()
    np.savez(npz, images=arrays.images, labels=arrays.labels, classes=np.array(arrays.classes),
             source=np.array(fingerprint))
    return mac(npz.getvalue()) + npz.getvalue()


@pytest.mark.parametrize("signer", ["nothing", "plain-sha256", "another-key", "the-users-key"])
def test_forged_cache_entry_is_not_trusted(cached_folder, signer):
    source, arrays, entry = cached_folder
    key = (entry.parent / "cache.key").read_bytes()
    mac = {"nothing": lambda payload: b"",  # an entry of the earlier formats
           "plain-sha256": lambda payload: hashlib.sha256(payload).digest(),  # anyone can compute this
           "another-key": lambda payload: hmac.new(bytes(32), payload, hashlib.sha256).digest(),
           "the-users-key": lambda payload: hmac.new(key, payload, hashlib.sha256).digest()}[signer]
    black = data.ImageArrays(np.zeros_like(arrays.images), arrays.labels, arrays.classes)
    entry.write_bytes(signed_entry(black, data.folder._fingerprint(source, "train"), mac))
    if signer == "the-users-key":  # the control: only the key tells a forged entry from einet's own
        assert (data.load_image_folder(source, "train").images == 0).all()
        return
    with pytest.warns(UserWarning, match="rebuilding the invalid cache entry"):
        again = data.load_image_folder(source, "train")
    np.testing.assert_array_equal(again.images, arrays.images)
    np.testing.assert_array_equal(data.load_image_folder(source, "train").images, arrays.images)  # rewritten


def test_cache_key_is_private_and_made_once(cached_folder):
    source, arrays, entry = cached_folder
    key_file = entry.parent / "cache.key"
    assert len(key_file.read_bytes()) == 32 and key_file.stat().st_mode & 0o777 == 0o600
    key_file.chmod(0o644)  # others could read it, so could forge entries: einet stops caching until it is replaced
    with pytest.warns(UserWarning, match=r"could not cache .*readable by you only"):
        np.testing.assert_array_equal(data.load_image_folder(source, "train").images, arrays.images)


def test_a_key_made_by_another_process_meanwhile_is_the_one_used(tmp_path, monkeypatch):
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
    write_png_folder(tmp_path / "set")
    real_token_bytes = data.folder.secrets.token_bytes

    def token_bytes_while_another_process_loads(count):
        # Another process makes its key and caches the folder while this one is making a key.
        monkeypatch.setattr(data.folder.secrets, "token_bytes", real_token_bytes)
        data.load_image_folder(tmp_path / "set", "train")
        return real_token_bytes(count)

    monkeypatch.setattr(data.folder.secrets, "token_bytes", token_bytes_while_another_process_loads)
    arrays = data.load_image_folder(tmp_path / "set", "train")  # no warning: the other's key and entry are used
    np.testing.assert_array_equal(arrays.images, data.load_image_folder(tmp_path / "set", "train", cache=False).images)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix != ".npz") == ["cache.key"]


LOAD_IN_A_CHILD = """
import sys
from einet import data
arrays = data.load_image_folder(sys.argv[1], "train")
print(arrays.images.sum(dtype="int64"), arrays.labels.tolist())
"""


def test_processes_loading_one_folder_at_once_all_get_its_arrays(tmp_path):
    write_png_folder(tmp_path / "set")
    expected = data.load_image_folder(tmp_path / "set", "train", cache=False)
    env = {**os.environ, "EINET_CACHE_DIR": str(tmp_path / "cache")}
    children = [subprocess.Popen([sys.executable, "-c", LOAD_IN_A_CHILD, str(tmp_path / "set")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and not err, err  # no warning either: no one saw a damaged key or entry
        assert out.split(maxsplit=1) == [str(expected.images.sum(dtype="int64")), f"{expected.labels.tolist()}\n"]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


@contextmanager
def deadline(seconds: int):
    """Fail, instead of hanging the test run, if the block takes `seconds` (a timeout it swallows fails too)."""
    def expire(signum, frame):
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    started = time.monotonic()
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < seconds, f"blocked for {seconds} s"


needs_fifos = pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(signal, "SIGALRM"), reason="POSIX only")


@needs_fifos
def test_fifo_planted_as_the_cache_entry_is_replaced_not_waited_on(cached_folder):
    source, arrays, entry = cached_folder
    entry.unlink()
    os.mkfifo(entry)  # open() for reading would wait for a writer forever
    with deadline(10), pytest.warns(UserWarning, match="rebuilding the invalid cache entry"):
        again = data.load_image_folder(source, "train")
    np.testing.assert_array_equal(again.images, arrays.images)
    assert entry.is_file()


@needs_fifos
@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("fifo", ["set/train/cat/2.png", "set.zip"])
def test_fifo_as_a_source_file_is_refused_not_waited_on(tmp_path, monkeypatch, cache, fifo):
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
    write_png_folder(tmp_path / "set")
    os.mkfifo(tmp_path / fifo)
    with deadline(10), pytest.raises(data.DatasetError, match=r"OSError: .*not a regular file: '.*(2\.png|set\.zip)'"):
        data.load_image_folder(tmp_path / fifo.split("/")[0], "train", cache=cache)


def test_cache_sees_a_file_changed_inside_a_folder(cached_folder):
    source, _, _ = cached_folder
    changed = sorted((source / "train").rglob("*.png"))[0]
    changed.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert (data.load_image_folder(source, "train").images == 0).all(axis=(1, 2, 3)).sum() == 1


def test_cache_sees_a_same_size_edit_with_the_mtime_put_back(cached_folder):
    source, _, _ = cached_folder
    changed = sorted((source / "train").rglob("*.png"))[0]
    before = changed.stat()
    black = png_bytes(np.zeros((8, 8, 3), np.uint8))
    changed.write_bytes(black + bytes(before.st_size - len(black)))  # Pillow stops reading at the PNG's end
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (changed.stat().st_size, changed.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert (data.load_image_folder(source, "train").images == 0).all(axis=(1, 2, 3)).sum() == 1


def test_cache_write_is_atomic_and_durable(tmp_path, monkeypatch):
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
    write_png_folder(tmp_path / "set")
    synced, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    def replace_after_another_writer(src, dst):
        # Another process builds and writes the same entry while this one is about to rename its file.
        monkeypatch.setattr(os, "replace", real_replace)
        data.load_image_folder(tmp_path / "set", "train")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace_after_another_writer)
    arrays = data.load_image_folder(tmp_path / "set", "train")
    assert len(synced) == 3  # the key, and the entry by each writer
    # no temporary file left behind
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".key", ".npz"]
    np.testing.assert_array_equal(data.load_image_folder(tmp_path / "set", "train").images, arrays.images)


def test_cache_that_cannot_be_written_only_warns(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "not-a-folder"))
    write_png_folder(tmp_path / "set")
    with pytest.warns(UserWarning, match="could not cache"):
        assert len(data.load_image_folder(tmp_path / "set", "train")) == 6


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


class Samples:
    """What users write: a map-style dataset (len and [i]) of (image tensor, label) items."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def samples(count: int = 6, shape=(3, 4, 4)) -> list:
    """`count` good (float image, class index) items."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    return [(torch.rand(shape, generator=generator), i % 3) for i in range(count)]


def batches_of(items: list, through: str, **checks) -> list:
    """All batches (of 2) of `items` served as a Dataset or through a DataLoader, by as_batches."""
    from torch.utils.data import DataLoader

    source = Samples(items) if through == "dataset" else DataLoader(Samples(items), batch_size=2)
    return list(data.as_batches(source, 2, **checks))


@pytest.mark.parametrize("through", ["dataset", "loader"])
def test_good_batches_pass_the_checks_unchanged(through):
    torch = pytest.importorskip("torch")
    items = samples()
    batches = batches_of(items, through, num_classes=3, expected_shape=(3, 4, 4))
    assert torch.equal(torch.cat([images for images, _ in batches]), torch.stack([image for image, _ in items]))
    assert torch.cat([labels for _, labels in batches]).tolist() == [0, 1, 2, 0, 1, 2]
    assert all(labels.dtype == torch.int64 for _, labels in batches)


@pytest.mark.parametrize("through", ["dataset", "loader"])
@pytest.mark.parametrize(("label", "checks", "match"), [
    (1.7, {}, r"label 1\.7\d* of {} is not an integer class index \(the labels are torch\.float"),
    (float("nan"), {}, r"label nan of {} is not an integer class index"),
    (-1, {}, r"label -1 of {} is negative"),
    (3, {"num_classes": 3}, r"label 3 of {} is outside \[0, 3\)"),
], ids=["fraction", "nan", "negative", "too-large"])
def test_bad_label_is_refused_naming_its_sample(through, label, checks, match):
    items = samples()
    items[3] = (items[3][0], label)  # the second of the second batch
    where = "sample 3 of the Samples" if through == "dataset" else "item 1 of batch 1 of the DataLoader"
    with pytest.raises(ValueError, match=match.format(where)):
        batches_of(items, through, **checks)


def test_boolean_and_non_numeric_labels_are_refused():
    torch = pytest.importorskip("torch")
    booleans = [(image, index % 2 == 1) for index, (image, _) in enumerate(samples())]  # collated to a bool tensor
    with pytest.raises(ValueError, match=r"label True of sample 1 of the Samples is not an integer class index "
                                         r"\(the labels are torch\.bool\)"):
        batches_of(booleans, "dataset")
    with pytest.raises(ValueError, match=r"label 0\.0 of sample 0 .*torch\.float64"):  # whole, but floats
        batches_of([(image, float(label)) for image, label in samples()], "dataset")
    with pytest.raises(TypeError, match="yields labels that are not numbers"):
        batches_of([(image, "cat") for image, _ in samples()], "dataset")
    with pytest.raises(ValueError, match="a batch of 2 images with 4 labels"):  # one-hot pairs, say
        batches_of([(image, torch.tensor([1, 0])) for image, _ in samples()], "dataset")


@pytest.mark.parametrize("through", ["dataset", "loader"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_image_is_refused_naming_its_sample(through, value):
    items = samples()
    items[5][0][1, 2, 3] = value
    where = "sample 5 of the Samples" if through == "dataset" else "item 1 of batch 2 of the DataLoader"
    with pytest.raises(ValueError, match=f"{where} has non-finite pixel values"):
        batches_of(items, through)


def test_images_of_the_wrong_kind_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"sample 0 of the Samples is an image of shape \(1, 4, 4\), but "
                                         r"\(3, 4, 4\) \(channels, height, width\) is expected"):
        batches_of(samples(shape=(1, 4, 4)), "dataset", expected_shape=(3, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4\), not \[batch, channels, height, width\]"):
        batches_of(samples(shape=(4, 4)), "dataset")
    with pytest.raises(TypeError, match=r"images of dtype torch\.uint8: einet takes floating-point images"):
        batches_of([(torch.zeros(3, 4, 4, dtype=torch.uint8), 0)] * 2, "loader")
    with pytest.raises(TypeError, match=r"images of dtype torch\.complex64"):
        batches_of([(torch.zeros(3, 4, 4, dtype=torch.complex64), 0)] * 2, "dataset")


def test_image_dataset_is_checked_against_classes_and_shape_up_front():
    arrays = data.ImageArrays(np.zeros((5, 4, 4, 1), np.uint8), np.arange(5) % 3, ("a", "b", "c"))
    dataset = data.ImageDataset(arrays, mean=(0.0,), std=(1.0,))
    assert len(list(data.as_batches(dataset, 2, num_classes=3, expected_shape=(1, 4, 4)))) == 3
    with pytest.raises(ValueError, match=r"label 2 of sample 2 of the ImageDataset is outside \[0, 2\)"):
        data.as_batches(dataset, 2, num_classes=2)
    with pytest.raises(ValueError, match=r"sample 0 of the ImageDataset is an image of shape \(1, 4, 4\)"):
        data.as_batches(dataset, 2, expected_shape=(3, 4, 4))


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
