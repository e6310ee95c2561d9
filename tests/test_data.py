"""Dataset loaders on small synthetic files in each standard format, and on the real data when present."""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import struct
import tracemalloc
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
    monkeypatch.setattr(data, "MAX_IDX_BYTES", 1 << 20, raising=False)
    assert_refused_cheaply(lambda: data.read_idx(tmp_path / "large.gz"), "above MAX_IDX_BYTES")


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
    ({b"data": ROW, b"labels": [2**70]}, NAMES, "labels must be 1 integers, got object"),  # was OverflowError
    ({b"data": ROW}, NAMES, "no b'data' and b'labels' entries"),  # was TypeError
    ({b"data": ROW, b"labels": [[0], [1, 2]]}, NAMES, "not a CIFAR batch: ValueError"),
    ({b"data": ROW, b"labels": [0]}, {b"label_names": [b"\xff"] * 10}, "not a CIFAR meta file .*UnicodeDecodeError"),
    ({b"data": ROW, b"labels": [0]}, ["not a dict"], "not a CIFAR meta file .*TypeError"),
], ids=["codec", "overflow", "no-labels", "ragged-labels", "undecodable-name", "meta-not-a-dict"])
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
    monkeypatch.setattr(data, "MAX_CIFAR_FILE_BYTES", 1000, raising=False)
    with pytest.raises(data.DatasetError, match=r"test_batch holds 12\d+ bytes, above MAX_CIFAR_FILE_BYTES = 1000"):
        data.load_cifar10(tmp_path, "test")


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
    monkeypatch.setattr(data, "MAX_IMAGE_BYTES", 100, raising=False)
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


@pytest.mark.parametrize("planted", ["other-images", "no-digest"])
def test_planted_cache_entry_is_not_trusted(cached_folder, planted):
    source, arrays, entry = cached_folder
    with np.load(entry) as stored:
        fields = dict(stored)
    fields["images"] = np.zeros_like(arrays.images)
    if planted == "no-digest":  # what the earlier cache format held
        del fields["source"], fields["digest"]
    np.savez(entry, **fields)
    with pytest.warns(UserWarning, match="rebuilding the invalid cache entry"):
        again = data.load_image_folder(source, "train")
    np.testing.assert_array_equal(again.images, arrays.images)


def test_cache_sees_a_file_changed_inside_a_folder(cached_folder):
    source, _, _ = cached_folder
    changed = sorted((source / "train").rglob("*.png"))[0]
    changed.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
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
    assert len(synced) == 2
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npz"]  # no temporary file left behind
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
