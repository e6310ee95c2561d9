"""The committed fixtures are complete and intact: every folder lists its files with their SHA-256
(SHA256SUMS), every listed file is there and matches, and nothing else is there but the files a
study makes from them (named in its README)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

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
