"""Hostile files and output paths, findings of the files/formats/outputs audit: each test names its finding."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from einet._atomic import atomic_write
from einet.data import DatasetError, load_image_folder
from einet.formats import manifest as manifests
from einet.rules import AnswerRule
from einet.validation import check_outputs


def _save(path: Path, image: Image.Image, format: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format)
    path.write_bytes(buffer.getvalue())
    return path


def _grey(value: int = 100) -> Image.Image:
    return Image.fromarray(np.full((4, 4), value, np.uint8))


def test_finding_7_an_image_is_decoded_only_as_the_format_its_suffix_names(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    _save(tmp_path / "train" / "a" / "ok.png", _grey(), "PNG")
    _save(tmp_path / "train" / "b" / "tiff.png", _grey(), "TIFF")  # Pillow would decode it as a TIFF
    with pytest.raises(DatasetError, match=r"tiff\.png: it is not a PNG image"):
        load_image_folder(tmp_path, cache=False)

    ghostscript = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ghostscript.append(args))
    (tmp_path / "train" / "b" / "tiff.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n"
                                                        b"showpage\n")
    with pytest.raises(DatasetError, match=r"tiff\.png: it is not a PNG image"):
        load_image_folder(tmp_path, cache=False)
    assert not ghostscript  # the EPS plugin never saw it


def test_finding_8_out_writes_through_a_symlink_and_refuses_a_fifo(tmp_path):
    target = tmp_path / "real.npz"
    target.write_bytes(b"old")
    link = tmp_path / "link.npz"
    link.symlink_to(target.name)
    check_outputs({"--out": link})
    with atomic_write(link) as f:
        f.write(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"--out .*fifo\.npz is a FIFO, not a regular file"):
        check_outputs({"--out": fifo})
    via_link = tmp_path / "via-link"
    via_link.symlink_to(fifo)
    with pytest.raises(ValueError, match="via-link is a FIFO"), atomic_write(via_link) as f:
        f.write(b"never")
    assert fifo.is_fifo() and via_link.is_symlink()


# The nesting pre-check on a manifest-sized JSON string, in a fresh interpreter: its peak RSS growth.
_NESTING_MEMORY = """
import resource, sys
from einet.validation import parse_json
text = b'{"a": "' + b"x" * 15_000_000 + b'"}'
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
parse_json(text)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / len(text))
"""


def test_finding_11_a_long_json_string_costs_a_few_times_its_size_not_a_hundred():
    result = subprocess.run([sys.executable, "-c", _NESTING_MEMORY], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 3.0  # json.loads itself needs ~2x: the decoded text and the string


def _bundle(folder: Path, unlisted: str = "") -> Path:
    """A bundle folder whose manifest verifies, over placeholder files (nothing here reads their content)."""
    from einet.evaluation.select import Deployment, deployment_record

    folder.mkdir()
    names = ("network.pt", "cs-holdout.npz", "timing-images.npz", "et-0.npz")
    for name in names:
        (folder / name).write_bytes(f"placeholder {name}".encode())
    device = {"kind": "cpu", "name": "a cpu", "threads": 1}
    manifest = {
        "format": "einet-bundle", "version": 1, "name": "hostile", "provenance": {},
        "network": {"file": "network.pt", "variant": {"thumbnail": None, "second_look": None, "depth": None},
                    "num_exits": 2},
        "input": {"shape": [1, 8, 8], "mean": [0.5], "std": [0.25], "classes": ["a", "b"]},
        "split": {"fraction": 0.2, "seed": 0, "data": "0" * 64}, "holdout": "cs-holdout.npz", "test": None,
        "test_data": None, "timing_images": "timing-images.npz", "exit_times": {"kind": "uniform", "horizon_ms": 2.0},
        "runtime": {"adapt": False, "threads": 1, "adaptation": {}},
        "select": {"score_under": ["uniform"], "rules": ["latest"], "time_zero": [False], "signals": ["confidence"],
                   "policies": None, "predictor_epochs": 3, "seed": 0, "planning_us": None},
        "devices": [{"key": manifests.device_key(device), "device": device, "et": "et-0.npz",
                     "deployment": deployment_record(Deployment("static 100%", AnswerRule("latest"), "uniform",
                                                                mask=(True, True)))}],
        "files": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names if name != unlisted}}
    manifest["sha256"] = manifests.manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_finding_19_a_packed_bundle_is_unpacked_once_and_its_errors_name_it(tmp_path, monkeypatch):
    from einet.bundle import read_bundle

    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where each read used to unpack a copy
    (tmp_path / "tmp").mkdir()
    packed = manifests.pack(_bundle(tmp_path / "bundle"), tmp_path / "bundle.einet")
    folders = {manifests.read_manifest(packed)[0] for _ in range(3)}
    assert not list((tmp_path / "tmp").iterdir())
    cached = sorted((tmp_path / "cache" / "bundles").iterdir())
    assert list(folders) == cached and len(cached) == 1

    bundle = read_bundle(packed)  # a file whose checksum holds but whose content is no ET-profile
    with pytest.raises(manifests.BundleError) as refused:
        bundle.et(bundle.devices[0])
    assert str(packed / "et-0.npz") in str(refused.value) and str(tmp_path / "cache") not in str(refused.value)

    damaged = tmp_path / "damaged.einet"
    with zipfile.ZipFile(packed) as source, zipfile.ZipFile(damaged, "w") as target:
        for member in source.infolist():
            target.writestr(member, source.read(member) + (b"!" if member.filename == "et-0.npz" else b""))
    with pytest.raises(manifests.BundleError, match=r"et-0\.npz fails its SHA-256") as refused:
        manifests.read_manifest(damaged)
    assert str(damaged) in str(refused.value) and str(tmp_path / "cache") not in str(refused.value)
    assert sorted((tmp_path / "cache" / "bundles").iterdir()) == cached  # no copy kept of a damaged bundle


def test_finding_22_a_manifest_that_does_not_list_the_network_is_refused(tmp_path):
    manifests.read_manifest(_bundle(tmp_path / "listed"))
    with pytest.raises(manifests.BundleError, match=r"network\.pt must be listed in files"):
        manifests.read_manifest(_bundle(tmp_path / "unlisted", unlisted="network.pt"))


def test_finding_20_grey_images_with_alpha_or_a_grey_palette_stay_grey(tmp_path):
    grey = _grey(100)
    _save(tmp_path / "train" / "a" / "l.png", grey, "PNG")
    _save(tmp_path / "train" / "a" / "la.png", grey.convert("LA"), "PNG")
    _save(tmp_path / "train" / "b" / "p.png", grey.convert("P"), "PNG")
    arrays = load_image_folder(tmp_path, cache=False)
    assert arrays.images.shape == (3, 4, 4, 1) and (arrays.images == 100).all()

    _save(tmp_path / "train" / "b" / "rgb.png", Image.new("RGB", (4, 4), (200, 0, 0)), "PNG")
    with pytest.raises(DatasetError, match=r"mix channel counts: .*rgb\.png has 3"):
        load_image_folder(tmp_path, cache=False)


@pytest.mark.parametrize(("weights", "match"), [((1e308, 1.0), "1e\\+308"), ((0.0, 0.0), "all be zero"),
                                                ((float("inf"), 1.0), "inf")])
def test_finding_21_ensemble_weights_are_finite_bounded_and_not_all_zero(weights, match):
    with pytest.raises(ValueError, match=match):
        AnswerRule("ensemble", weights)
    with pytest.raises(ValueError, match=match):
        AnswerRule.from_record({"name": "ensemble", "weights": list(weights), "time_zero_class": None,
                                "time_zero_accuracy": 0.0})
    assert AnswerRule("ensemble", (0.0, 2)).weights == (0.0, 2.0)


def test_finding_24_a_refused_pickle_names_the_file_and_gives_no_advice_to_unprotect(tmp_path):
    torch = pytest.importorskip("torch")
    from einet.formats.checkpoint import load_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"version": 2, "model": {}, "hook": os.getcwd}, path)
    with pytest.raises(ValueError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert str(path) in message and "objects a checkpoint may not hold" in message and "getcwd" in message
    assert "weights_only" not in message and "\n" not in message
