"""`einet build` stopped, changed and run again (findings of the build audit): a stopped build resumes,
a partial training is resumed only by the run it belongs to, a half-made stage is made again, every
input a stage reads is in its key, a rebuild keeps what it did not make, and publishing a bundle never
leaves no bundle or litter behind."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from einet import data
from einet.bundle import read_bundle
from einet.cli import main
from einet.formats.manifest import add_device, read_manifest
from einet.formats.split import HeldOutSplit, fingerprint

SECTIONS = {
    "data": {"dataset": '"mnist"', "path": '"data"', "holdout": "0.2", "seed": "0"},
    "network": {"zoo": '"b_alexnet"', "width": "0.125", "exit_head": '"light"'},
    "train": {"epochs": "2", "batch_size": "64", "threads": "1"},
    "levers": {"refit_exits": "false", "thumbnail": "false"},
    "profile": {"repeats": "5", "warmup": "1"},
    "select": {"dist": '"normal"', "score_under": '["normal"]', "policies": '["static"]', "rules": '["latest"]',
               "time_zero": "[false]", "predictor_epochs": "1"},
    "runtime": {"threads": "1"},
    "output": {"bundle": '"out.einet"'},
}


def write_config(folder: Path, **changes: dict[str, str]) -> Path:
    """The fastest build there is (200 MNIST images, two epochs of a tiny network, one policy), with
    `changes` to its sections; the data in folder/data."""
    sections = {name: options | changes.get(name, {}) for name, options in SECTIONS.items()}
    path = folder / "config.toml"
    path.write_text('name = "tiny"\n' + "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in options.items())
                                                for name, options in sections.items()))
    return path


def write_mnist(folder: Path, train: int = 200, test: int = 100) -> None:
    """The first images of the embedded MNIST slice, as the four IDX files."""
    folder.mkdir(parents=True)
    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        arrays = data.load("mnist", str(files("einet") / "resources"), split)
        images, labels = arrays.images[:count, ..., 0], arrays.labels[:count].astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + struct.pack(">3I", *images.shape)
                                                             + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + struct.pack(">I", count)
                                                             + labels.tobytes())


def build(config: Path) -> int:
    """`einet build CONFIG`; -1 where Ctrl-C escaped it (as a traceback would, for a user)."""
    try:
        return main(["build", str(config), "--quiet"])
    except KeyboardInterrupt:
        return -1


class Epochs:
    """Counts the epochs training checkpoints; with `stop` (Ctrl-C, say), raised right after the first one's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop: type[BaseException] | None = KeyboardInterrupt) -> None:
        import einet.training.loop as loop

        self.save, self.stop, self.count = loop.save_checkpoint, stop, 0
        monkeypatch.setattr(loop, "save_checkpoint", self)

    def __call__(self, *args: object, **kwargs: object) -> None:
        self.save(*args, **kwargs)
        self.count += 1
        if self.stop is not None:
            stop, self.stop = self.stop, None
            raise stop


def ctrl_c(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    write_mnist(folder / "data")
    assert build(write_config(folder)) == 0
    return folder


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    """A finished build (config, data, work folder, bundle) of its own: every stage unchanged."""
    return Path(shutil.copytree(finished, tmp_path / "build", symlinks=True))


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    write_mnist(tmp_path / "data")
    write_config(tmp_path)
    return tmp_path


@pytest.mark.parametrize("change", [{"seed": "1"}, {"holdout": "0.3"}])
def test_finding_2_a_partial_training_of_another_split_is_discarded_not_resumed(fresh, monkeypatch, capsys, change):
    epochs = Epochs(monkeypatch)
    assert build(fresh / "config.toml") == 130
    config = write_config(fresh, data=SECTIONS["data"] | change)
    capsys.readouterr()
    assert build(config) == 0
    out = capsys.readouterr().out
    assert epochs.count == 1 + 2  # the new split's network trained from its first epoch on
    assert out.count("discarded") == 1 and "training.pt was trained with" in out
    arrays = data.load("mnist", str(fresh / "data"), "train")
    split = HeldOutSplit.of(arrays, float(change.get("holdout", 0.2)), int(change.get("seed", 0)))
    assert read_bundle(fresh / "out.einet").split == split


def test_finding_3_a_build_crashed_in_its_first_stage_resumes(fresh, monkeypatch, capsys):
    epochs = Epochs(monkeypatch, stop=MemoryError)
    with pytest.raises(MemoryError):
        build(fresh / "config.toml")
    assert json.loads((fresh / "out.einet.work" / "stages.json").read_text()) == {}
    assert build(fresh / "config.toml") == 0
    assert epochs.count == 2  # the second epoch only: resumed
    assert "discarded" not in capsys.readouterr().out
    read_bundle(fresh / "out.einet")


def test_finding_4_a_stage_stopped_midway_is_made_again_not_kept(copy, monkeypatch, capsys):
    """Threads 1 -> 2, stopped while profiling (the ET-profile already timed on 2 threads) -> 1 again."""
    import einet.profiling

    write_config(copy, runtime={"threads": "2"})
    monkeypatch.setattr(einet.profiling, "profile_cs", ctrl_c)
    assert build(copy / "config.toml") == 130
    monkeypatch.undo()
    write_config(copy)
    capsys.readouterr()
    assert build(copy / "config.toml") == 0
    out = capsys.readouterr().out
    assert "[profile] running" in out and "[profile] unchanged" not in out
    assert "[network] unchanged" in out


def test_finding_5_other_test_data_remakes_the_test_profile(copy, capsys):
    labels = copy / "data" / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8] = (raw[8] + 1) % 10  # the first test image's label
    labels.write_bytes(bytes(raw))
    assert build(copy / "config.toml") == 0
    out = capsys.readouterr().out
    assert "[profile] running" in out and "[network] unchanged" in out
    test = data.load("mnist", str(copy / "data"), "test")
    bundle = read_bundle(copy / "out.einet")
    assert bundle.test_data == fingerprint(test)
    assert np.array_equal(bundle.test().labels, test.labels)


def test_finding_6_a_partial_training_of_another_network_shape_is_one_line_and_discarded(fresh, monkeypatch, capsys):
    epochs = Epochs(monkeypatch)
    assert build(fresh / "config.toml") == 130
    config = write_config(fresh, network=SECTIONS["network"] | {"width": "0.25"})
    capsys.readouterr()
    assert build(config) == 0  # not a RuntimeError on the state_dict's sizes
    out = capsys.readouterr().out
    assert epochs.count == 1 + 2
    assert [line for line in out.splitlines() if "discarded" in line] == [
        line for line in out.splitlines() if "training.pt holds a checkpoint of another model" in line] != []
    assert read_bundle(fresh / "out.einet").network().num_exits > 1


def test_finding_9_a_rebuild_keeps_other_devices_and_files_and_drops_devices_of_another_network(copy, capsys):
    bundle = copy / "out.einet"
    ours = read_bundle(bundle)  # a device added as `einet profile BUNDLE` adds one (here with this one's timings)
    add_device(bundle, {"kind": "cuda", "name": "Another GPU", "threads": 1}, ours.et(ours.devices[0]),
               ours.devices[0].deployment, None)
    (bundle / "NOTES.txt").write_text("mine")
    (bundle / "plots").mkdir()
    (bundle / "plots" / "a.txt").write_text("mine too")
    added = read_bundle(bundle).devices[1]
    timed = (bundle / added.et).read_bytes()
    assert build(copy / "config.toml") == 0  # every stage unchanged: the same network
    kept = read_bundle(bundle)
    assert [entry.key for entry in kept.devices] == [kept.devices[0].key, added.key]
    assert (bundle / kept.devices[1].et).read_bytes() == timed and kept.devices[1].deployment == added.deployment
    assert (bundle / "NOTES.txt").read_text() == "mine" and (bundle / "plots" / "a.txt").read_text() == "mine too"
    capsys.readouterr()
    assert build(write_config(copy, train=SECTIONS["train"] | {"lr": "0.1"})) == 0  # another network
    out = capsys.readouterr().out
    assert f"dropped the entries of {added.key}" in out
    assert len(read_bundle(bundle).devices) == 1 and (bundle / "NOTES.txt").read_text() == "mine"


def test_finding_17_ctrl_c_is_one_line_exit_130_and_the_build_resumes(fresh, monkeypatch, capsys):
    epochs = Epochs(monkeypatch)
    assert build(fresh / "config.toml") == 130
    told = capsys.readouterr().err.strip().splitlines()
    assert len(told) == 1 and "interrupted" in told[0] and "same command" in told[0] and "resume" in told[0]
    assert build(fresh / "config.toml") == 0
    assert epochs.count == 2 and "[network] running" in capsys.readouterr().out


REWRITE = """
import os, shutil, sys
from pathlib import Path
from einet.formats.deployment import deployment_from_record
from einet.formats import manifest
from einet.formats.npz import read_arrays
from einet.formats.profiles import CSProfile, ETRecord
from einet.formats.split import HeldOutSplit
from einet.variants import Variant

path, source, crash = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if sys.argv[4] == "renames":  # as where the system cannot swap two folders
    import ctypes
    ctypes.CDLL = None
folder, verified = manifest.read_manifest(source)
m = verified.record  # the verified JSON, copied as a rebuild does
entry, calls = m["devices"][0], []

def dies(operation):
    def op(*args, **kwargs):
        calls.append(args)
        if len(calls) == crash:  # killed before it
            os._exit(3)
        return operation(*args, **kwargs)
    return op

os.rename, shutil.rmtree = dies(os.rename), dies(shutil.rmtree)
manifest.write_bundle(
    path, name=m["name"], checkpoint=folder / "network.pt", variant=Variant(**m["network"]["variant"]),
    num_exits=m["network"]["num_exits"], input_spec=m["input"], split=HeldOutSplit.from_dict(m["split"]),
    holdout=CSProfile.load(folder / "cs-holdout.npz"), test=None, test_data=None,
    timing_images=read_arrays(folder / "timing-images.npz", "timing-images")[0]["images"],
    exit_times=m["exit_times"], runtime=m["runtime"], select_options=m["select"], provenance={},
    devices=[(entry["device"], ETRecord.load(folder / entry["et"]), deployment_from_record(entry["deployment"],
                                                                                            folder), None)])
"""


@pytest.mark.parametrize("publish", ["exchange", "renames"])
def test_finding_18_a_publish_killed_at_any_point_leaves_a_bundle_and_the_next_one_no_litter(finished, tmp_path,
                                                                                              publish):
    """Killed before each rename or removal in turn: the path holds a bundle (where the folders are
    swapped in one step: Linux); the next write leaves the bundle (the old one put back if need be) alone."""
    bundle = Path(shutil.copytree(finished / "out.einet", tmp_path / "out.einet"))

    def rewrite(crash: int) -> int:
        done = subprocess.run([sys.executable, "-c", REWRITE, str(bundle), str(finished / "out.einet"), str(crash),
                               publish], capture_output=True, text=True, check=False)
        assert done.returncode in (0, 3), done.stderr
        return done.returncode

    for crash in range(1, 10):
        if rewrite(crash) == 0:  # no crash: it made fewer calls
            break
        if publish == "exchange" and sys.platform == "linux":
            read_manifest(bundle)  # the old bundle or the new one, never none
        assert rewrite(0) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.einet"]
        read_manifest(bundle)
    assert crash > 1
