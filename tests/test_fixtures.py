"""The committed fixtures are complete and intact: every folder lists its files with their SHA-256
(SHA256SUMS), every listed file is there and matches, and nothing else is there but the files a
study makes from them (named in its README). Every committed .npz is in the current format and
passes its own checksum, and files of the unreleased older versions are refused."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from einet.formats.npz import FORMAT_VERSION, ProfileFormatError, read_arrays, write_arrays

ROOT = Path(__file__).resolve().parents[1]
# Where fixtures live, and the files a study makes into its fixture folders itself (not committed).
BENCHMARKS = ROOT / "benchmarks" / "fixtures"
PLACES = {BENCHMARKS: (),
          ROOT / "experiments" / "levers" / "fixtures": ("cs-holdout.npz", "cs-test.npz")}
PROFILED = ("et.npz", "cs-holdout.npz", "cs-test.npz", "predictor.npz", "predictor-confidence.npz")
FOLDERS = sorted(folder for place in PLACES for folder in place.iterdir() if folder.is_dir())


def listed(folder: Path) -> dict[str, str]:
    sums = folder / "SHA256SUMS"
    assert sums.is_file(), f"{folder.relative_to(ROOT)} has no SHA256SUMS"
    return {name: digest for digest, name in (line.split("  ", 1) for line in sums.read_text().splitlines())}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda folder: folder.name)
def test_every_fixture_file_is_listed_present_and_intact(folder):
    files = listed(folder)
    assert files, folder
    for name, digest in files.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, f"{folder.name}/{name} changed"
    made_here = PLACES[folder.parent]
    present = {p.name for p in folder.iterdir()} - {"SHA256SUMS"}
    assert present - set(files) <= set(made_here), f"{folder.name}: unlisted {sorted(present - set(files))}"


@pytest.mark.parametrize("folder", [f for f in FOLDERS if f.parent == BENCHMARKS], ids=lambda f: f.name)
def test_every_benchmark_fixture_is_a_whole_profile(folder):
    assert set(PROFILED) <= set(listed(folder)), f"{folder.name} lacks {sorted(set(PROFILED) - set(listed(folder)))}"


def committed_npz() -> list[Path]:
    """Every .npz git tracks: fixtures, test data, package resources."""
    names = subprocess.run(["git", "ls-files", "-z", "*.npz"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in names.decode().split("\0") if name]


def header_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive, archive.open("__header__.npy") as member:
        return json.loads(np.lib.format.read_array(member).tobytes())


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("path", committed_npz(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_committed_npz_is_current_and_passes_its_checksum(path):
    header = header_of(path)
    assert header["version"] == FORMAT_VERSION, f"{path.relative_to(ROOT)} is format version {header['version']}"
    read_arrays(path, header["kind"])  # verifies the array list and the SHA-256


@pytest.mark.parametrize("version", [1, 2])
def test_unreleased_npz_versions_are_refused_naming_the_version(tmp_path, version):
    path = write_arrays(tmp_path / "old.npz", "et-profile", {"conv": np.zeros(2)})
    header = header_of(path) | {"version": version}
    with zipfile.ZipFile(path) as archive:
        conv = archive.read("conv.npy")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__header__.npy", npy_bytes(np.frombuffer(json.dumps(header).encode(), np.uint8)))
        archive.writestr("conv.npy", conv)
    with pytest.raises(ProfileFormatError, match=f"version {version}; this einet reads versions"):
        read_arrays(path, "et-profile")

