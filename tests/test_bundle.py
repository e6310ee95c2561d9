"""The deployment bundle and the path to it: `einet build` (resumable), `einet.load`, `einet run`,
`einet profile BUNDLE`, `einet evaluate BUNDLE`; tampered, foreign or incomplete bundles refused."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet import bundle as bundles  # noqa: E402
from einet.cli import main  # noqa: E402
from einet.formats import manifest as manifests  # noqa: E402
from einet.variants import Variant, variant_exits  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_config(folder: Path, **changes: str) -> Path:
    """A fast build of the embedded MNIST slice, every lever on (light exits refitted, thumbnail exit,
    second look through 2 blocks), written into `folder`."""
    sections = {
        "data": f'dataset = "mnist"\npath = "{files("einet") / "resources"}"\nholdout = 0.2',
        "network": 'zoo = "b_alexnet"\nwidth = 0.125\nexit_head = "light"',
        "train": "epochs = 1\nbatch_size = 64",
        "levers": "refit_exits = true\nrefit_epochs = 1\nthumbnail = true\nsecond_look = [2]",
        "profile": "repeats = 20\nwarmup = 2",
        "select": 'dist = "normal"\npredictor_epochs = 3',
        "output": 'bundle = "out.einet"',
        "runtime": "adapt = true\n[runtime.adaptation]\nevery = 5\nbackground = false",
    } | changes
    path = folder / "config.toml"
    path.write_text('name = "tiny"\n' + "\n".join(f"[{name}]\n{body}" for name, body in sections.items()) + "\n")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("build")
    assert main(["build", str(tiny_config(folder)), "--quiet"]) == 0
    return folder / "out.einet"


@pytest.mark.slow
def test_a_build_writes_a_bundle_that_loads_into_a_runtime(built):
    bundle = bundles.read_bundle(built)
    assert bundle.name == "tiny" and bundle.classes == tuple(str(d) for d in range(10))
    assert bundle.split.fraction == 0.2 and len(bundle.split.data) == 64
    entry = bundle.entry("cpu")
    assert entry.device["threads"] == 1 and bundle.et(entry).profile.num_blocks == bundle.num_exits
    assert bundle.holdout().num_exits == bundle.num_exits == bundle.test().num_exits
    assert bundle.test().num_samples == 1000 and bundle.holdout().num_samples == 500
    validation = entry.deployment.validation
    assert len(validation) > 10 and all(0 <= v <= 1 for v in validation.values())
    assert {name.split(" | ")[0] for name in validation} >= {"the network", "thumbnail exit (8x8)"}
    import einet

    with einet.load(built) as runtime:
        assert runtime.adaptation is not None  # adaptive by default, as the bundle says
        assert runtime.adaptation.every == 5  # with the settings it records
        x = bundle.preprocess(bundle.timing_images()[:1])
        answer = runtime.infer(x)
        assert answer.exit == bundle.num_exits - 1 or not answer.interrupted
        late = runtime.infer(x, interrupt=0.0)
        assert late.interrupted
    with bundles.load(built, adapt=False) as runtime:
        assert runtime.adaptation is None and runtime.infer(x).prediction is not None


@pytest.mark.slow
def test_a_second_build_reruns_nothing_unchanged_and_a_changed_option_reruns_its_stage_on(built, capsys):
    config = built.parent / "config.toml"
    assert main(["build", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged: kept") == 5 and "[network] running" not in out
    text = config.read_text().replace("predictor_epochs = 3", "predictor_epochs = 4")
    config.with_name("changed.toml").write_text(text.replace('bundle = "out.einet"', 'bundle = "changed.einet"\n'
                                                             'work = "out.einet.work"'))
    assert main(["build", str(config.with_name("changed.toml")), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[profile] unchanged" in out and "[select] running" in out


@pytest.mark.slow
def test_pack_load_pack_gives_the_same_bytes_and_the_same_weights(built, tmp_path):
    first = manifests.pack(built, tmp_path / "a.einet")
    unpacked = bundles.read_bundle(first)  # a packed bundle loads like a folder
    second = manifests.pack(unpacked.folder, tmp_path / "b.einet")
    assert first.read_bytes() == second.read_bytes()
    assert unpacked.manifest == bundles.read_bundle(built).manifest
    a = bundles.read_bundle(built).network().state_dict()
    b = unpacked.network().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _copy(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.einet"
    shutil.copytree(built, copy)
    return copy


def _rewrite(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    manifest["sha256"] = manifests.manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
@pytest.mark.parametrize(("tamper", "message"), [
    (lambda f: (f / "manifest.json").write_text((f / "manifest.json").read_text().replace('"adapt": true',
                                                                                           '"adapt": false')),
     "fails its SHA-256 checksum"),
    (lambda f: (f / "network.pt").write_bytes((f / "network.pt").read_bytes()[:-7] + b"garbage"),
     "network.pt fails its SHA-256"),
    (lambda f: (f / "cs-holdout.npz").unlink(), "cs-holdout.npz is missing"),
    (lambda f: _rewrite(f, lambda m: m.update(version=2)), "bundle version 2; this einet reads version 1"),
    (lambda f: _rewrite(f, lambda m: m.update(surprise=1)), "fields"),
    (lambda f: _rewrite(f, lambda m: m["files"].update({"../x": "0" * 64})), "plain name"),
    (lambda f: _rewrite(f, lambda m: m["exit_times"].update(horizon_ms=-1.0)), "horizon_ms"),
    (lambda f: _rewrite(f, lambda m: m["input"].update(mean=[0.1, 0.2])), "one number per channel"),
    (lambda f: _rewrite(f, lambda m: m["runtime"]["adaptation"].update(background="yes")), "true or false"),
    (lambda f: _rewrite(f, lambda m: m["devices"][0].update(key="cuda: H200, 1 thread")), "does not match"),
    (lambda f: (f / "manifest.json").write_text("[" * 100_000), "nested"),
])
def test_a_tampered_or_foreign_bundle_is_one_error_and_nothing_is_built(built, tmp_path, tamper, message):
    folder = _copy(built, tmp_path)
    tamper(folder)
    with pytest.raises(manifests.BundleError, match=message):
        bundles.read_bundle(folder)
    assert main(["evaluate", str(folder)]) == 2


@pytest.mark.slow
def test_a_bundle_without_this_device_names_the_command_that_adds_it(built, tmp_path, capsys):
    folder = _copy(built, tmp_path)
    _rewrite(folder, lambda m: m["devices"][0]["device"].update(threads=3) or m["devices"][0].update(
        key=manifests.device_key(m["devices"][0]["device"])))
    with pytest.raises(manifests.BundleError,
                       match=r"no ET-profile for this device .*einet profile .* --device cpu --runtime-threads 1"):
        bundles.load(folder)
    assert main(["profile", str(folder), "--device", "cpu", "--repeats", "5", "--warmup", "1", "--quiet"]) == 0
    bundle = bundles.read_bundle(folder)
    assert len(bundle.devices) == 2 and bundle.entry("cpu").device["threads"] == 1
    # timed in its fastest verified form (layouts of the 3 base blocks under the thumbnail and second look),
    # which its runtime runs; eager on request
    form = bundle.form(bundle.entry("cpu"))
    assert form.name == "prepared" and len(form.channels_last) == 3
    x = bundle.preprocess(bundle.timing_images()[:1])
    with bundles.load(folder) as runtime:
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runtime.model.modules())
        assert runtime.infer(x).prediction is not None
    with bundles.load(folder, eager=True) as runtime:
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in runtime.model.modules())
    # profiled again: that device's entry is replaced, its old files gone
    assert main(["profile", str(folder), "--device", "cpu", "--repeats", "5", "--warmup", "1", "--quiet"]) == 0
    assert len(bundles.read_bundle(folder).devices) == 2
    assert sorted(p.name for p in folder.glob("et-*.npz")) == ["et-0.npz", "et-2.npz"]


@pytest.mark.slow
def test_evaluate_pairs_a_bundle_with_another(built, capsys):
    assert main(["evaluate", str(built), "--against", str(built), "--dist", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "tiny minus tiny: +0.00 ± 0.00 pp" in out and "uniform" in out


def image_zip(path: Path, count: int = 60) -> Path:
    from PIL import Image

    from einet.data import load_mnist

    test = load_mnist(files("einet") / "resources", "test")
    with zipfile.ZipFile(path, "w") as archive:
        for k in range(count):
            buffer = io.BytesIO()
            Image.fromarray(test.images[k, :, :, 0]).save(buffer, format="png")
            archive.writestr(f"test/{test.classes[test.labels[k]]}/{k:04d}.png", buffer.getvalue())
    return path


@pytest.mark.slow
def test_run_answers_image_files_under_deadlines_and_agrees_with_the_simulator(built, tmp_path, capsys):
    images = image_zip(tmp_path / "images.zip")
    out = tmp_path / "answers.csv"
    assert main(["run", str(built), "--images", str(images), "--split", "test", "--warmup", "5", "--check-simulator",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "60 images, normal exit times" in text and "runtime minus simulator" in text and "the promise" in text
    rows = out.read_text().splitlines()
    assert rows[0].startswith("index,label,prediction,exit") and len(rows) == 61
    assert main(["run", str(built), "--images", str(images), "--split", "test", "--deadline-ms", "1000",
                 "--static", "--warmup", "0", "--quiet"]) == 0
    assert "60 images, deadline 1000.0 ms, static runtime" in capsys.readouterr().out
    assert main(["run", str(built), "--images", str(images), "--split", "test", "--inline", "--warmup", "5",
                 "--check-simulator", "--quiet"]) == 0
    assert "60 images, normal exit times" in capsys.readouterr().out
    runtime = einet.load(built, inline=True)  # the library's way: no worker thread
    with runtime:
        assert runtime.wait_idle(0.0) and runtime.infer(torch.zeros(1, 1, 28, 28), interrupt=1.0).prediction is not None


@pytest.mark.parametrize(("argv", "message"), [
    (["build", "missing.toml"], "No such file"),
    (["run", "nowhere.einet", "--images", "x.zip"], "not an einet bundle"),
    (["evaluate"], "without a BUNDLE, --profiles and --predictor are required"),
    (["profile", "--device", "cpu"], "without a BUNDLE, --data and --checkpoint and --out-dir are required"),
])
def test_bundle_command_mistakes_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[data]\npath = 'x'\n[network]\nzoo = 'b_alexnet'\n[output]\nbundle = 'b'\n[levers]\nsurprise = 1\n",
     "unknown option levers.surprise"),
    ("[network]\nzoo = 'b_alexnet'\n[output]\nbundle = 'b'\n", "data.path is required"),
    ("[data]\npath = 'x'\n[network]\nzoo = 'b_alexnet'\nconstructor = 'a:b'\n[output]\nbundle = 'b'\n",
     "exactly one of network.zoo and network.constructor"),
    ("[data]\npath = 'x'\n[network]\nzoo = 'b_alexnet'\n[output]\nbundle = 'b'\n[levers]\nsecond_look = 3\n",
     "list of depths"),
    ("[oops]\n", "unknown section"),
    ("[data]\npath = 'x'\n[network]\nzoo = 'b_alexnet'\n[output]\nbundle = 'b'\n[runtime.adaptation]\nspeed = 2\n",
     "unknown adaptation setting 'speed'"),
    ("x = = 1", "not valid TOML"),
])
def test_config_mistakes_are_named(tmp_path, capsys, text, message):
    (tmp_path / "c.toml").write_text(text)
    assert main(["build", str(tmp_path / "c.toml")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("train.epochs", "-1", "train.epochs must be an integer >= 1"),
    ("select.horizon_ms", "'abc'", "select.horizon_ms must be milliseconds > 0"),
    ("levers.refit_pool", "1000", "levers.refit_pool must be 1..64"),
    ("data.holdout", "0", "data.holdout must be a fraction in (0, 0.99]"),
    ("select.rules", "['latest', 'worst']", "select.rules must be a list of latest, best, ensemble"),
    ("runtime.adapt", "'yes'", "runtime.adapt must be true or false"),
    ("select.time_zero", "[]", "select.time_zero must be a list of true/false"),
])
def test_every_config_value_is_checked_before_any_work(tmp_path, capsys, option, value, message):
    section, name = option.split(".")
    base = {"data": "path = 'x'", "network": "zoo = 'b_alexnet'", "output": "bundle = 'b'"}
    base[section] = base.get(section, "") + f"\n{name} = {value}"
    (tmp_path / "c.toml").write_text("".join(f"[{s}]\n{body}\n" for s, body in base.items()))
    assert main(["build", str(tmp_path / "c.toml")]) == 2
    assert message in capsys.readouterr().err


def test_every_config_option_has_a_check():
    from einet.build_config import CHECKS, SECTIONS

    assert set(CHECKS) == {f"{section}.{option}" for section, options in SECTIONS.items() for option in options}


@pytest.mark.slow
def test_the_mnist_example_builds_as_shipped(tmp_path, capsys):
    """examples/mnist.toml as the README runs it, its output moved into a temporary folder."""
    text = (EXAMPLES / "mnist.toml").read_text()
    text = text.replace('path = "../python/einet/resources"', f'path = "{files("einet") / "resources"}"')
    text = text.replace('bundle = "../runs/mnist.einet"', 'bundle = "mnist.einet"')
    assert 'bundle = "mnist.einet"' in text and "../python" not in text
    (tmp_path / "mnist.toml").write_text(text)
    assert main(["build", str(tmp_path / "mnist.toml"), "--quiet"]) == 0
    bundle = bundles.read_bundle(tmp_path / "mnist.einet")
    assert bundle.name == "b_alexnet-mnist" and bundle.test().num_samples == 1000
    assert main(["evaluate", str(tmp_path / "mnist.einet")]) == 0
    assert "b_alexnet-mnist" in capsys.readouterr().out


def test_the_example_configs_read():
    from einet.build_config import read_config

    for path in sorted(EXAMPLES.glob("*.toml")):
        config = read_config(path)
        assert config.output.bundle and config.select.score_under[0] == config.select.dist


def test_variant_exits_cut_the_full_variant():
    full = Variant(8, "flip")
    assert variant_exits(3, full, Variant()).tolist() == [1, 2, 3]
    assert variant_exits(3, full, Variant(8)).tolist() == [0, 1, 2, 3]
    assert variant_exits(3, full, Variant(8, "flip", 2)).tolist() == [0, 1, 2, 4, 5]
    assert variant_exits(3, Variant(None, "flip"), Variant(None, "flip")).tolist() == [
        0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="not a part of"):
        variant_exits(3, Variant(), Variant(8))
    assert np.array_equal(variant_exits(2, Variant(), Variant()), [0, 1])


@pytest.mark.parametrize("layout", ["bundle is the config's folder", "bundle is the data", "bundle is the config",
                                    "work inside the bundle", "bundle exists and is not one"])
def test_a_build_never_replaces_or_writes_into_its_inputs(tmp_path, capsys, layout):
    (tmp_path / "precious.txt").write_text("keep me")
    data = tmp_path / "data"
    shutil.copytree(files("einet") / "resources", data)
    bundle, work = {"bundle is the config's folder": (".", "w"), "bundle is the data": ("data", "w"),
                    "bundle is the config": ("c.toml", "w"), "work inside the bundle": ("b", "b/w"),
                    "bundle exists and is not one": ("precious.txt", "w")}[layout]
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\ndataset = "mnist"\npath = "data"\n[network]\nzoo = "b_alexnet"\n'
                      f'[output]\nbundle = "{bundle}"\nwork = "{work}"\n')
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["build", str(config)]) == 2
    assert "overlap" in capsys.readouterr().err or layout == "bundle exists and is not one"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "precious.txt").read_text() == "keep me" and len(list(data.iterdir())) == 5


@pytest.mark.slow
def test_pack_never_overwrites_its_bundle_and_profile_keeps_unlisted_files(built, tmp_path):
    folder = _copy(built, tmp_path)
    with pytest.raises(ValueError, match="would overwrite inside"):
        manifests.pack(folder, folder / "network.pt")
    bundles.read_bundle(folder)  # intact
    (folder / "README.txt").write_text("my notes")
    assert main(["profile", str(folder), "--repeats", "3", "--warmup", "1", "--quiet"]) == 0
    assert (folder / "README.txt").read_text() == "my notes"


def _packed_with(built: Path, tmp_path: Path, compress: int = zipfile.ZIP_STORED, extra: bytes = b"") -> Path:
    path = tmp_path / "odd.einet"
    with zipfile.ZipFile(path, "w", compress) as archive:
        for file in sorted(built.iterdir()):
            archive.write(file, file.name)
        if extra:
            archive.writestr("junk.bin", extra)
    return path


@pytest.mark.slow
def test_a_packed_bundle_is_read_manifest_first_and_only_as_einet_packs_it(built, tmp_path):
    with pytest.raises(manifests.BundleError, match="not a plain stored file"):
        bundles.read_bundle(_packed_with(built, tmp_path, zipfile.ZIP_DEFLATED))
    unpacked = manifests.unpack(_packed_with(built, tmp_path, extra=b"0" * 1000), tmp_path / "out")
    assert not (unpacked / "junk.bin").exists()  # only what the manifest lists is written
    damaged = tmp_path / "damaged.einet"
    data = bytearray(manifests.pack(built, tmp_path / "ok.einet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a member: its CRC fails
    damaged.write_bytes(bytes(data))
    with pytest.raises(manifests.BundleError):
        bundles.read_bundle(damaged)


@pytest.mark.slow
@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["input"].update(std=[-0.3]), "input std"),
    (lambda m: m["network"]["variant"].update(thumbnail=8.0), "thumbnail's side must be a whole number"),
    (lambda m: m["devices"][0].update(device={}), "a device must give kind"),
    (lambda m: m.update(devices=[]), "at least one device"),
    (lambda m: m["select"].update(predictor_epochs=10**12), "select predictor_epochs"),
    (lambda m: m["select"].pop("rules"), "select must give"),
    (lambda m: m["input"].update(classes=["a"] * 10), "distinct names"),
    (lambda m: m["network"].update(num_exits=m["network"]["num_exits"] + 1), "entries for .* exits|has .* exits"),
    (lambda m: m["input"].update(classes=[str(k) for k in range(5)]), "classes"),
])
def test_a_resigned_manifest_must_still_fit_its_network(built, tmp_path, change, message):
    folder = _copy(built, tmp_path)
    _rewrite(folder, change)
    with pytest.raises(manifests.BundleError, match=message):
        bundle = bundles.read_bundle(folder)
        bundle.test()
        bundle.network()
    assert main(["evaluate", str(folder)]) == 2
