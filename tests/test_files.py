"""einet's files under attack: damaged or hostile archives, predictor and checkpoint headers that ask for
huge models, bit flips, concurrent writers and writers killed mid-save.

Every bad file must give a ValueError (ProfileFormatError for .npz files) that names it, before anything
big is allocated; every save must be atomic, durable and safe to run from several processes at once.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from einet.formats.npz import ProfileFormatError, read_arrays, write_arrays
from einet.formats.profiles import CSProfile

torch = pytest.importorskip("torch")

import einet.formats.checkpoint as checkpoint  # noqa: E402
import einet.models.zoo as zoo  # noqa: E402
import einet.predictor as predictor  # noqa: E402
import einet.training.loop as training  # noqa: E402
from einet.formats.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from einet.models import build  # noqa: E402
from tests.fuzz.saves import check, kill_a_saver, reader, save, writer  # noqa: E402

SPEC = {"name": "b_alexnet", "num_classes": 3, "in_channels": 1, "width": 0.125}
REPO = Path(__file__).resolve().parents[1]
REAL_PREDICTOR = predictor.ConfidencePredictor


# --------------------------------------------------------------------------- helpers


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def header_bytes(header: object) -> bytes:
    return npy_bytes(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))


GOOD_HEADER = {"format": "einet", "version": 1, "kind": "et-profile", "meta": {}}


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def patched(path: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))
    return path


def first_member_data_offset(path: Path) -> int:
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length


# --------------------------------------------------------------------------- 5: read_arrays


def bad_deflate_stream(tmp_path: Path) -> Path:
    path = write_zip(tmp_path / "zlib.npz", {"__header__.npy": header_bytes(GOOD_HEADER),
                                             "conv.npy": npy_bytes(np.ones(100))})
    return patched(path, first_member_data_offset(path), b"\xff\xff\xff\xff")  # deflate block type 3: invalid


def unknown_compression(tmp_path: Path) -> Path:
    path = write_zip(tmp_path / "method.npz", {"__header__.npy": header_bytes(GOOD_HEADER)})
    central = path.read_bytes().index(b"PK\x01\x02")
    return patched(path, central + 10, struct.pack("<H", 99))  # compression method 99 (AES): unsupported


def header_not_an_object(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "list.npz", {"__header__.npy": header_bytes([1, 2, 3])})


def header_too_deep(tmp_path: Path) -> Path:
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    return write_zip(tmp_path / "deep.npz", {"__header__.npy": npy_bytes(np.frombuffer(deep, dtype=np.uint8))})


def npy_claiming(descr: str, shape: tuple[int, ...], payload: bytes) -> bytes:
    """A .npy member whose header says `descr` and `shape`, followed by `payload`."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def shape_larger_than_data(tmp_path: Path) -> Path:
    """A member whose .npy header claims 2**50 float64 (8 PiB) but that holds 8 bytes."""
    member = npy_claiming("<f8", (2**50,), b"\0" * 8)
    return write_zip(tmp_path / "huge.npz", {"__header__.npy": header_bytes(GOOD_HEADER), "conv.npy": member})


def plain_npy(tmp_path: Path) -> Path:
    np.save(tmp_path / "plain.npy", np.ones(3))
    return tmp_path / "plain.npy"


def raw_member(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "raw.npz", {"__header__": b"not an array"})


def object_member(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "object.npz", {"__header__.npy": header_bytes(GOOD_HEADER),
                                               "conv.npy": npy_bytes(np.array([{"a": 1}], dtype=object))})


def meta_not_an_object(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "meta.npz", {"__header__.npy": header_bytes(GOOD_HEADER | {"meta": [1]})})


def version_true(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "true.npz", {"__header__.npy": header_bytes(GOOD_HEADER | {"version": True})})


@pytest.mark.parametrize(("make", "message"), [
    (bad_deflate_stream, "not a readable einet file"),  # zlib.error escaped
    (unknown_compression, "not a readable einet file"),  # NotImplementedError escaped
    (header_not_an_object, "header is not a JSON object"),  # AttributeError escaped
    (header_too_deep, "corrupt header"),  # RecursionError escaped
    (shape_larger_than_data, r"declares .*9007199254740992 bytes"),  # MemoryError escaped
    (plain_npy, "not a readable einet file"),  # TypeError escaped
    (raw_member, "not an array"),  # AttributeError escaped
    (object_member, "dtype object"),
    (meta_not_an_object, "meta is not a JSON object"),
    (version_true, "version True"),
])
def test_damaged_archives_raise_profile_format_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ProfileFormatError, match=message) as caught:
        read_arrays(path, "et-profile")
    assert path.name in str(caught.value)


def test_read_arrays_caps_what_it_decompresses(tmp_path, monkeypatch):
    import einet.formats.npz as container

    assert container.MAX_ARCHIVE_BYTES >= 2**30  # documented; real CS-profiles with log-probabilities are big
    path = write_arrays(tmp_path / "zeros.npz", "et-profile", {"conv": np.zeros(1_000_000)})
    assert path.stat().st_size < 20_000  # compresses 1000-fold
    assert read_arrays(path, "et-profile")[0]["conv"].shape == (1_000_000,)
    with pytest.raises(ProfileFormatError, match=r"expands to 8000\d+ bytes, more than the 1000000"):
        read_arrays(path, "et-profile", max_bytes=1_000_000)
    monkeypatch.setattr(container, "MAX_ARCHIVE_BYTES", 1_000_000)  # the default limit is the module's
    with pytest.raises(ProfileFormatError, match="expands to"):
        read_arrays(path, "et-profile")


def test_member_sizes_are_checked_before_decompressing(tmp_path, monkeypatch):
    """The limit is applied to the zip directory: nothing is inflated for an archive that is too big."""
    path = write_arrays(tmp_path / "zeros.npz", "et-profile", {"conv": np.zeros(1_000_000)})
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or real_open(self, *a, **k))
    with pytest.raises(ProfileFormatError, match="expands to"):
        read_arrays(path, "et-profile", max_bytes=1_000_000)
    assert opened == []


# --------------------------------------------------------------------------- 6: load_predictor


def predictor_file(tmp_path: Path, meta_changes: dict | None = None, array_changes: dict | None = None) -> Path:
    model = REAL_PREDICTOR(3, (4,), "correctness")  # the fixture below forbids building through load_predictor
    path = predictor.save_predictor(tmp_path / "good.npz", model)
    arrays, meta = read_arrays(path, "predictor")
    for name, value in (array_changes or {}).items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value(arrays[name]) if callable(value) else value
    return write_arrays(tmp_path / "p.npz", "predictor", arrays, meta | (meta_changes or {}))


@pytest.fixture
def no_model_built(monkeypatch):
    """Fail the test if load_predictor builds a model (an allocation sized by the header)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"ConfidencePredictor{args} built before the file was validated")

    monkeypatch.setattr(predictor, "ConfidencePredictor", refuse)


@pytest.mark.parametrize(("meta", "arrays", "message"), [
    ({"hidden": [20_000, 20_000], "layers": 3}, {}, "hidden"),  # the 1.6 GB header
    ({"hidden": [20_000], "layers": 2}, {}, "hidden"),
    ({"hidden": [4, 4], "layers": 3}, {}, r"misses the array 'weight2'|weight1 must have shape"),
    ({"num_exits": 10**6}, {}, "num_exits"),
    ({"num_exits": 0}, {}, "num_exits"),
    ({"num_exits": True}, {}, "num_exits"),
    ({"num_exits": "3"}, {}, "num_exits"),
    ({"num_exits": 3.0}, {}, "num_exits"),
    ({"hidden": 4}, {}, "hidden"),
    ({"hidden": [4.5]}, {}, "hidden"),
    ({"hidden": [0]}, {}, "hidden"),
    ({"hidden": [-4]}, {}, "hidden"),
    ({"hidden": [[4]]}, {}, "hidden"),
    ({"target": ["correctness"]}, {}, "target"),
    ({"target": "accuracy"}, {}, "target"),
    ({"layers": 5}, {}, "layers"),
    ({"layers": "2"}, {}, "layers"),
    ({}, {"weight0": None}, "misses the array 'weight0'"),
    ({}, {"extra": np.ones(2)}, "unexpected array 'extra'"),
    ({}, {"weight0": lambda a: a.T}, r"weight0 must have shape \(4, 6\)"),
    ({}, {"bias1": lambda a: a[None]}, r"bias1 must have shape \(3,\)"),
    ({}, {"weight1": lambda a: a.astype(np.int64)}, "weight1 must be floating-point"),
    ({}, {"weight1": lambda a: a.astype(bool)}, "weight1 must be floating-point"),
    ({}, {"bias0": lambda a: np.full_like(a, np.nan)}, "bias0 must be finite"),
    ({}, {"weight1": lambda a: np.full_like(a, np.inf)}, "weight1 must be finite"),
    ({}, {"weight1": lambda a: np.full_like(a, 1e300)}, "weight1 must be finite"),  # inf as float32
])
def test_predictor_headers_and_arrays_are_checked_before_building(tmp_path, no_model_built, meta, arrays, message):
    path = predictor_file(tmp_path, meta, arrays)
    with pytest.raises(ProfileFormatError, match=message) as caught:
        predictor.load_predictor(path)
    assert "p.npz" in str(caught.value)


def test_a_2kb_predictor_header_asking_for_1_6gb(tmp_path, no_model_built):
    path = predictor_file(tmp_path, {"hidden": [20_000, 20_000], "layers": 3})
    assert path.stat().st_size < 2_500
    with pytest.raises(ProfileFormatError):
        predictor.load_predictor(path)


def test_valid_predictors_still_load(tmp_path):
    model = predictor.ConfidencePredictor(3, (4, 5), "confidence")
    loaded = predictor.load_predictor(predictor.save_predictor(tmp_path / "ok.npz", model))
    for mine, theirs in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(mine, theirs)
    # float32 and big-endian arrays are fine too
    path = predictor_file(tmp_path, {}, {"weight0": lambda a: a.astype(">f8"), "bias1": lambda a: a.astype(np.float32)})
    assert predictor.load_predictor(path).num_exits == 3
    for fixture in sorted((REPO / "benchmarks" / "fixtures").glob("*/predictor*.npz")):
        assert predictor.load_predictor(fixture).num_exits > 1


# --------------------------------------------------------------------------- 7: checkpoint checksums


def small_model(seed: int = 0):
    torch.manual_seed(seed)
    spec = dict(SPEC)
    return build(spec.pop("name"), **spec)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bit_flips_never_load_as_different_weights(tmp_path):
    path = tmp_path / "m.pt"
    model = small_model()
    save_checkpoint(path, model, SPEC, history=training.History(loss=[1.0, 0.5]))
    original = path.read_bytes()
    reference = model.state_dict()
    rng = np.random.default_rng(0)
    outcomes = {"rejected": 0, "identical": 0, "silent": 0}
    flipped = tmp_path / "flipped.pt"
    for position in rng.choice(len(original), 150, replace=False):
        raw = bytearray(original)
        raw[position] ^= 1 << int(rng.integers(8))
        flipped.write_bytes(bytes(raw))
        try:
            restored, state = load_checkpoint(flipped)
        except ValueError as error:
            assert "flipped.pt" in str(error)
            outcomes["rejected"] += 1
            continue
        same = same_state(reference, restored.state_dict()) and state["spec"] == SPEC
        outcomes["identical" if same else "silent"] += 1
    assert outcomes["silent"] == 0, outcomes
    assert outcomes["rejected"] >= 140, outcomes


def test_checksum_mismatch_names_the_file(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, small_model(), SPEC)
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"version", "model", "spec", "sha256"}
    state["model"]["exits.0.classifier.3.bias"][0] += 1.0
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"edited\.pt .*checksum"):
        load_checkpoint(tmp_path / "edited.pt")
    del state["sha256"]
    torch.save(state, tmp_path / "stripped.pt")
    with pytest.raises(ValueError, match=r"stripped\.pt has no checksum"):
        load_checkpoint(tmp_path / "stripped.pt")


def test_checkpoints_without_checksum_still_load_unverified(tmp_path):
    """Version 1 (no checksum): what the training jobs started before this change write."""
    model = small_model()
    torch.save({"version": 1, "model": model.state_dict(), "spec": SPEC, "history": {"loss": [1.0]}},
               tmp_path / "v1.pt")
    restored, state = load_checkpoint(tmp_path / "v1.pt")
    assert same_state(model.state_dict(), restored.state_dict()) and "sha256" not in state
    fixture, _ = load_checkpoint(REPO / "benchmarks" / "fixtures" / "b_alexnet_w05_cpu" / "model.pt")
    assert fixture.num_exits == 3
    assert "unverified" in (checkpoint.read_checkpoint.__doc__ or "") + (load_checkpoint.__doc__ or "")


def test_checkpoint_round_trip_with_training_state(tmp_path):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 1, 16, 16))[0].sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    save_checkpoint(tmp_path / "m.pt", model, SPEC, optimizer=optimizer, scheduler=scheduler,
                    generator=torch.Generator().manual_seed(1), torch_rng=torch.get_rng_state(),
                    history=training.History(loss=[0.5]), config=training.TrainConfig(exit_weights=(1.0, 2.0, 3.0)))
    restored, state = load_checkpoint(tmp_path / "m.pt")
    assert same_state(model.state_dict(), restored.state_dict())
    assert state["config"]["exit_weights"] == (1.0, 2.0, 3.0) and state["history"]["loss"] == [0.5]


# --------------------------------------------------------------------------- 8: checkpoint specs


@pytest.fixture
def only_meta_builds(monkeypatch):
    """Fail the test if load_checkpoint builds a real (allocated) model before validating the file."""
    real_build = zoo.build

    def guarded(name, **kwargs):
        if torch.get_default_device().type != "meta":
            raise AssertionError(f"{name}{kwargs} built before the checkpoint was validated")
        return real_build(name, **kwargs)

    monkeypatch.setattr(zoo, "build", guarded)


def checkpoint_with(tmp_path: Path, spec: object = None, drop_spec: bool = False, state_changes: dict | None = None,
                    version: int | None = None) -> Path:
    model = small_model()
    path = tmp_path / "c.pt"
    save_checkpoint(path, model, SPEC)
    state = torch.load(path, weights_only=True)
    if drop_spec:
        del state["spec"]
    elif spec is not None:
        state["spec"] = spec
    for key, value in (state_changes or {}).items():
        if value is None:
            del state["model"][key]
        else:
            state["model"][key] = value
    state.pop("sha256", None)
    if version == 1:
        state["version"] = 1
    else:
        state["sha256"] = checkpoint.state_digest(state)
    torch.save(state, path)
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"drop_spec": True}, "no model spec"),
    ({"spec": {}}, "no spec name"),
    ({"spec": ["b_alexnet"]}, "no model spec"),
    ({"spec": SPEC | {"name": "alexnet"}}, "unknown model 'alexnet'"),
    ({"spec": SPEC | {"name": 3}}, "unknown model 3"),
    ({"spec": SPEC | {"width": 1000.0}}, "width"),  # the multi-GB spec
    ({"spec": SPEC | {"width": 0.0}}, "width"),
    ({"spec": SPEC | {"width": float("nan")}}, "width"),
    ({"spec": SPEC | {"width": float("inf")}}, "width"),
    ({"spec": SPEC | {"width": "0.5"}}, "width"),
    ({"spec": SPEC | {"width": True}}, "width"),
    ({"spec": SPEC | {"num_classes": 0}}, "num_classes"),
    ({"spec": SPEC | {"num_classes": 10**9}}, "num_classes"),
    ({"spec": SPEC | {"num_classes": 3.0}}, "num_classes"),
    ({"spec": SPEC | {"in_channels": 10**6}}, "in_channels"),
    ({"spec": SPEC | {"in_channels": False}}, "in_channels"),
    ({"spec": SPEC | {"depth": 3}}, "unknown spec key 'depth'"),
    ({"spec": SPEC | {"growth": 6}}, "unknown spec key 'growth'"),  # msdnet only
    ({"spec": SPEC | {"exit_head": "heavy"}}, "exit_head must be one of paper, light, got 'heavy'"),
    ({"spec": SPEC | {"exit_head": "light"}}, "unexpected exits.0.linear.weight|missing exits.0"),  # not its weights
    ({"spec": SPEC | {"name": "resnet50_fine", "width": 16.0}}, "does not hold the resnet50_fine"),  # ~35 GB
    ({"spec": SPEC | {"num_classes": 5}}, r"exits.0.classifier.3.weight has shape \(3, 128\)"),
    ({"spec": SPEC | {"in_channels": 3}}, r"blocks.0.0.weight has shape"),
    ({"state_changes": {"blocks.0.1.running_mean": None}}, "missing blocks.0.1.running_mean"),
    ({"state_changes": {"extra.weight": torch.zeros(2)}}, "unexpected extra.weight"),
    ({"state_changes": {"blocks.0.1.bias": torch.zeros(5)}}, r"blocks.0.1.bias has shape \(5,\)"),
    ({"state_changes": {"blocks.0.1.bias": torch.zeros(8, dtype=torch.int64)}}, "blocks.0.1.bias has .*int64"),
    ({"state_changes": {"blocks.0.1.bias": [0.0] * 8}}, "blocks.0.1.bias is not a tensor"),
])
def test_checkpoint_specs_and_shapes_are_checked_before_building(tmp_path, only_meta_builds, changes, message):
    for version in (1, 2):  # without or with a checksum
        path = checkpoint_with(tmp_path, version=version, **changes)
        with pytest.raises(ValueError, match=message) as caught:
            load_checkpoint(path)
        assert "c.pt" in str(caught.value)


def test_load_state_dict_errors_become_value_errors(tmp_path, monkeypatch):
    def broken(self, state, strict=True, assign=False):
        raise RuntimeError("Error(s) in loading state_dict")

    for version in (1, 2):
        path = checkpoint_with(tmp_path, version=version)
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.Module, "load_state_dict", broken)
            with pytest.raises(ValueError, match=r"c\.pt.*Error\(s\) in loading state_dict"):
                load_checkpoint(path)


def test_msdnet_spec_keys_are_allowed(tmp_path):
    model = build("msdnet21", num_classes=3, in_channels=1, width=0.125, growth=2, compress_every=4)
    spec = {"name": "msdnet21", "num_classes": 3, "in_channels": 1, "width": 0.125, "growth": 2, "compress_every": 4}
    save_checkpoint(tmp_path / "msd.pt", model, spec)
    restored, _ = load_checkpoint(tmp_path / "msd.pt")
    assert same_state(model.state_dict(), restored.state_dict())


# --------------------------------------------------------------------------- 10: atomic, concurrent saves

@pytest.fixture
def forkserver(monkeypatch):
    """Processes forked from a clean server that has imported einet, torch and the harness: each
    starts in milliseconds, and none inherits pytest's threads."""
    if sys.platform == "win32" or "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the forkserver start method (POSIX)")
    # Before 3.12 the fork server ignores the parent's sys.path: it finds the harness through PYTHONPATH.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["einet.profiling", "einet.training.loop", "tests.fuzz.saves"])
    return context


@pytest.mark.parametrize("kind", ["arrays", "checkpoint"])
def test_two_writers_and_a_reader(tmp_path, forkserver, kind):
    context = forkserver
    path = str(tmp_path / ("f.npz" if kind == "arrays" else "f.pt"))
    save(kind, path, 0)
    stop, results = context.Event(), context.Queue()
    read_process = context.Process(target=reader, args=(kind, path, stop, results))
    writers = [context.Process(target=writer, args=(kind, path, 1000 * (w + 1), 60)) for w in range(2)]
    read_process.start()
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
    stop.set()
    messages = [results.get(timeout=60)]
    while not isinstance(messages[-1], tuple):
        messages.append(results.get(timeout=60))
    read_process.join(60)
    reads, corrupt = messages[-1]
    assert [p.exitcode for p in writers] == [0, 0], "a writer crashed"
    assert corrupt == 0, messages[:5]
    assert reads > 0
    assert check(kind, path) in {1059, 2059}  # one of the two last saves won
    assert sorted(os.listdir(tmp_path)) == [Path(path).name]  # no temporary files left behind


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
@pytest.mark.parametrize("kind", ["arrays", "checkpoint"])
def test_sigkill_during_saves_leaves_a_complete_file(tmp_path, forkserver, kind):
    context = forkserver
    path = str(tmp_path / ("f.npz" if kind == "arrays" else "f.pt"))
    save(kind, path, 7)
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + 8
    kills = 0
    while kills < 30 and time.monotonic() < deadline:
        assert kill_a_saver(context, kind, path, float(rng.uniform(0, 0.05)), timeout=30) == -signal.SIGKILL
        kills += 1
        check(kind, path)  # complete and consistent: the last finished save, or the first one
    assert kills >= 10
    leftovers = [name for name in os.listdir(tmp_path) if name != Path(path).name]
    assert leftovers, "no kill landed mid-save"  # a killed save leaves its temporary file, never the target
    assert all(name.startswith(f".{Path(path).name}.") and name.endswith(".tmp") for name in leftovers), leftovers


@pytest.mark.parametrize("kind", ["arrays", "checkpoint"])
def test_saves_are_fsynced(tmp_path, monkeypatch, kind):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}") if sys.platform == "linux" else None)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    save(kind, str(tmp_path / "f"), 1)
    assert len(synced) >= 2  # the file, then its directory
    if sys.platform == "linux":
        assert synced[0] is False and synced[-1] is True


def test_failed_saves_keep_the_previous_file_and_leave_nothing(tmp_path):
    class Unconvertible:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot convert")

    save("arrays", str(tmp_path / "f.npz"), 3)
    with pytest.raises(RuntimeError, match="cannot convert"):
        write_arrays(tmp_path / "f.npz", "et-profile", {"conv": Unconvertible()})
    save("checkpoint", str(tmp_path / "f.pt"), 4)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails; which error is torch's business
        save_checkpoint(tmp_path / "f.pt", torch.nn.Linear(1, 1), None, callback=lambda: 0)
    assert check("arrays", str(tmp_path / "f.npz")) == 3
    assert check("checkpoint", str(tmp_path / "f.pt")) == 4
    assert sorted(os.listdir(tmp_path)) == ["f.npz", "f.pt"]


def test_saved_files_get_umask_permissions(tmp_path):
    if sys.platform == "win32":
        pytest.skip("POSIX permissions")
    mask = os.umask(0o022)
    try:
        path = write_arrays(tmp_path / "f.npz", "et-profile", {"conv": np.ones(2)})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_cs_profiles_still_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    prediction = rng.integers(0, 3, (20, 4))
    labels = rng.integers(0, 3, 20)
    cs = CSProfile(rng.random((20, 4)).astype(np.float32), prediction, prediction == labels[:, None], labels,
                   {"split": "holdout"})
    loaded = CSProfile.load(cs.save(tmp_path / "cs.npz"))
    np.testing.assert_array_equal(loaded.confidence, cs.confidence)
    for fixture in sorted((REPO / "benchmarks" / "fixtures").glob("*/*.npz")):
        with np.load(fixture) as archive:
            kind = json.loads(archive["__header__"].tobytes())["kind"]
        read_arrays(fixture, kind)
