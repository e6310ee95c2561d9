"""Hostile input, CLI and API: every refusal is one line, exit status 2, before any work, in under a
second, and no input file changes. Each CLI case runs in its own process under a memory cap, so a
case that tried to allocate without limit fails here instead of being killed (or killing the machine).

Run it alone for the figures: ``python -m pytest tests/test_hostile.py -q`` (one test per case).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from einet.formats.npz import ProfileFormatError, read_arrays, write_arrays
from einet.formats.profiles import CSProfile
from einet.rules import AnswerRule
from tests.helpers import fake_cifar10

FIXTURE = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "b_alexnet_w025_mnist_cpu"
pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="fixture missing")

# Runs `einet ARGV` in a child and writes the seconds main() took to $EINET_TEST_SECONDS.
DRIVER = """
import os, sys, time
started = time.perf_counter()
from einet.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
open(os.environ["EINET_TEST_SECONDS"], "w").write(str(time.perf_counter() - started))
sys.exit(code)
"""
MEMORY_CAP = 6 * 1024**3  # address space of each child: far above what a refusal needs


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A workspace: P = a committed fixture's profiles, predictor and checkpoint; D = a tiny CIFAR-10;
    crafted bad files beside them."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(FIXTURE, root / "P")
    fake_cifar10(root / "D")
    arrays, meta = read_arrays(FIXTURE / "cs-holdout.npz", "cs-profile")
    small = {name: array[:64] for name, array in arrays.items()}
    for name, change in {"labels_2_40": {"labels": np.full(64, 2**40, np.int64)},
                         "nan_log_probs": {"log_probs": np.full_like(small["log_probs"], np.nan)},
                         "classes_2_31": {"log_prob_classes": np.full(small["log_probs"].shape, 2**31, np.int64)},
                         }.items():
        write_arrays(root / f"cs-{name}.npz", "cs-profile", small | change, meta)
    arrays, meta = read_arrays(FIXTURE / "predictor.npz", "predictor")
    rule = AnswerRule.from_record(meta["rule"]).record()  # (the fixture may spell the fields as before)
    for name, change in {"prior_1e30": {"rule": rule | {"time_zero_class": 10**30}},
                         "string_weights": {"rule": {"name": "ensemble", "weights": ["1"] * meta["num_exits"]}},
                         "huge_number": {"rule": rule | {"time_zero_accuracy": 10**400}},
                         "signal_pair": {"rule": {"name": "ensemble", "weights": [1.0] * meta["num_exits"]},
                                         "signal": "entropy"},
                         "confidence_signal": {"target": "confidence", "signal": "margin"}}.items():
        write_arrays(root / f"predictor-{name}.npz", "predictor", arrays, meta | change)
    os.mkfifo(root / "fifo.npz")
    (root / "afile").write_text("not a folder")
    return root


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _einet(root: Path, argv: list[str], tmp_path: Path) -> tuple[int, str, float]:
    seconds = tmp_path / "seconds"
    env = os.environ | {"EINET_TEST_SECONDS": str(seconds), "EINET_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", DRIVER, *argv], capture_output=True, text=True, cwd=root, env=env,
                          preexec_fn=_cap_memory, timeout=120)
    return done.returncode, done.stderr, float(seconds.read_text()) if seconds.exists() else float("inf")


T = ["--threads"]
TRAIN = ["train", "--dataset", "cifar10", "--data", "D", "--out", "m.pt"]
REFIT = ["refit-exits", "--dataset", "cifar10", "--data", "D", "--checkpoint", "P/model.pt", "--out", "r.pt"]
PROFILE = ["profile", "--dataset", "cifar10", "--data", "D", "--checkpoint", "P/model.pt", "--out-dir", "out"]
FIT = ["fit-predictor", "--cs", "P/cs-holdout.npz", "--out", "fitted.npz"]
EVALUATE = ["evaluate", "--profiles", "P", "--predictor", "P/predictor.npz"]
SELECT = ["select", "--profiles", "P", "--out", "deployment.json"]

CASES = {
    # outputs that would destroy an input, or cannot be written
    "fit-predictor onto its --cs": (["fit-predictor", "--cs", "P/cs-holdout.npz", "--out", "P/cs-holdout.npz"],
                                    r"would overwrite --cs"),
    "select onto a profile": (["select", "--profiles", "P", "--out", "P/et.npz"], r"would overwrite --profiles"),
    "select whose predictor is a profile": (["select", "--profiles", "P", "--out", "P/x/../predictor-deployed.npz"],
                                            r"its predictor .* is also --out"),
    "refit-exits onto a data file": ([*REFIT[:-1], "D/cifar-10-batches-py/data_batch_1"],
                                     r"would overwrite inside --data"),
    "refit-exits onto its checkpoint": ([*REFIT[:-1], "P/model.pt"], r"would overwrite --checkpoint"),
    "train into the data folder": ([*TRAIN[:-1], "D/cifar-10-batches-py/test_batch"], r"would overwrite inside --data"),
    "profile into the data folder": ([*PROFILE[:-1], "D/cifar-10-batches-py"], r"would overwrite inside --data"),
    "report onto the predictor": (["report", "--profiles", "P", "--predictor", "P/predictor.npz", "--out",
                                   "P/predictor.npz"], r"would overwrite --predictor"),
    "an --out under a file": ([*FIT[:-1], "afile/p.npz"], r"cannot write into"),
    "demo --out-dir under a file": (["demo", "--out-dir", "afile/sub"], r"cannot write into"),
    "an --out that is a folder": ([*FIT[:-1], "P"], r"is a folder"),
    # hostile numbers
    **{f"{cmd[0]} --threads {n}": ([*cmd, *T, n], r"--threads: the value must lie in \[1, 1024\]")
       for cmd in (TRAIN, REFIT, PROFILE, ["demo"]) for n in ("0", "-1")},
    "profile --runtime-threads 0": ([*PROFILE, "--runtime-threads", "0"], r"--runtime-threads: .*\[1, 1024\]"),
    "profile --repeats 1e12": ([*PROFILE, "--repeats", "1e12"], r"--repeats: .*\[1, 1e\+06\]"),
    "profile --warmup -1": ([*PROFILE, "--warmup", "-1"], r"--warmup"),
    "profile --second-look-depth 0": ([*PROFILE, "--second-look", "flip", "--second-look-depth", "0"],
                                      r"--second-look-depth"),
    "evaluate --draws 1e9": ([*EVALUATE, "--draws", "1e9"], r"--draws: .*\[1, 100000\]"),
    "evaluate --draws at the memory limit": ([*EVALUATE, "--draws", "100000"], r"needs about .* GiB.*EINET_MEMORY"),
    "evaluate --scale nan": ([*EVALUATE, "--scale", "nan"], r"--scale: .*finite"),
    "evaluate --horizon-ms -1": ([*EVALUATE, "--horizon-ms", "-1"], r"--horizon-ms"),
    "report --scales inf": (["report", "--profiles", "P", "--predictor", "P/predictor.npz", "--out", "r.png",
                             "--scales", "1", "inf"], r"--scales: .*finite"),
    **{f"train --{flag} {value}": ([*TRAIN, f"--{flag}", *value.split()], message) for flag, value, message in (
        ("width", "1e9", r"--width: .*\(0, 16\]"), ("lr", "inf", r"--lr: .*finite"), ("lr", "nan", r"--lr: .*finite"),
        ("lr", "0", r"--lr: .*\(0, 100\]"), ("holdout", "nan", r"--holdout: .*finite"),
        ("holdout", "1", r"--holdout: .*\[0, 0.99\]"), ("exit-weights", "1 nan 1", r"--exit-weights: .*finite"),
        ("epochs", "0", r"--epochs"), ("batch-size", "1e9", r"--batch-size"), ("seed", "-1", r"--seed"))},
    "refit-exits --pool 1000": ([*REFIT, "--pool", "1000"], r"--pool"),
    "fit-predictor --hidden 1e9": ([*FIT, "--hidden", "1000000000"], r"--hidden: .*\[1, 16384\]"),
    "fit-predictor --hidden 16385": ([*FIT, "--hidden", "16385"], r"--hidden: .*\[1, 16384\]"),
    "fit-predictor 64 layers of 16384": ([*FIT, "--hidden", *["16384"] * 40], r"needs about .* GiB"),
    "select --planning-us nan": ([*SELECT, "--planning-us", "nan"], r"--planning-us"),
    "select --epochs 0": ([*SELECT, "--epochs", "0"], r"--epochs"),
    "demo --samples 0": (["demo", "--samples", "0"], r"--samples"),
    "demo --samples 1e9": (["demo", "--samples", "1e9"], r"--samples"),
    # hostile files
    "fit-predictor --cs /dev/zero": (["fit-predictor", "--cs", "/dev/zero", "--out", "f.npz"],
                                     r"not a regular file"),
    "fit-predictor --cs a FIFO": (["fit-predictor", "--cs", "fifo.npz", "--out", "f.npz"], r"not a regular file"),
    "fit-predictor on labels 2**40": (["fit-predictor", "--cs", "cs-labels_2_40.npz", "--out", "f.npz"],
                                      r"must lie in \[0, 100000\)"),
    "fit-predictor on class indices 2**31": (["fit-predictor", "--cs", "cs-classes_2_31.npz", "--out", "f.npz"],
                                             r"must lie in \[0, 100000\)"),
    "fit-predictor on NaN log-probs (entropy)": (["fit-predictor", "--cs", "cs-nan_log_probs.npz", "--signal",
                                                  "entropy", "--out", "f.npz"], r"no NaN"),
    **{f"evaluate a predictor with {name}": ([*EVALUATE[:-1], f"predictor-{name}.npz"], match)
       for name, match in {"prior_1e30": r"time_zero_class .*must lie in", "string_weights": r"must be a number",
                           "huge_number": r"time_zero_accuracy must be a finite number",
                           "signal_pair": r"goes with rules latest or best",
                           "confidence_signal": r"goes with rules latest or best"}.items()},
    "evaluate a profile folder that is not one": (["evaluate", "--profiles", "D", "--predictor", "P/predictor.npz"],
                                                  r"missing file"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_cli_is_refused_in_one_line_before_any_work(place, tmp_path, name, monkeypatch):
    argv, match = CASES[name]
    if "memory limit" in name:
        monkeypatch.setenv("EINET_MEMORY_LIMIT_GB", "1")
    before = _digests(place)
    code, err, seconds = _einet(place, argv, tmp_path)
    assert _digests(place) == before, "an input changed"
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"einet {argv[0]}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert seconds < 1.0, f"refused after {seconds:.2f} s"
    assert not (place / "out").exists() and not any(place.glob("*.pt"))


def test_the_train_summary_never_replaces_the_checkpoint():
    from einet.validation import summary_path

    for out in ("m.pt", "t.json", "t.summary.json", "noext"):
        assert summary_path(out) != Path(out) and summary_path(out).name.endswith(".summary.json")


# ---------------------------------------------------------------- files, through the API

def test_class_indices_are_int32_on_disk(tmp_path):
    labels = np.array([0, 40_000, 99_999])
    prediction = np.stack([labels, labels[::-1]], 1)
    profile = CSProfile(np.full((3, 2), 0.5, np.float32), prediction, prediction == labels[:, None], labels)
    back = CSProfile.load(profile.save(tmp_path / "cs.npz"))
    assert back.labels.tolist() == [0, 40_000, 99_999] and back.prediction.tolist() == prediction.tolist()
    assert read_arrays(tmp_path / "cs.npz", "cs-profile")[0]["labels"].dtype == np.int32


def _eocd(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


def test_a_damaged_zip_directory_never_loads_a_profile_without_an_array(tmp_path):
    """The end record's directory size and entry count, each bit of them flipped: refused, never a profile
    that lost its log-probabilities (10 of 2,992 flips did that before)."""
    source = (FIXTURE / "cs-holdout.npz").read_bytes()
    original = CSProfile.load(FIXTURE / "cs-holdout.npz")
    assert original.has_log_probs
    end = _eocd(source)
    loaded_without = 0
    for field in range(end + 8, end + 16):  # entries on disk, entries, directory size (bytes)
        for bit in range(8):
            damaged = bytearray(source)
            damaged[field] ^= 1 << bit
            (tmp_path / "d.npz").write_bytes(bytes(damaged))
            try:
                loaded = CSProfile.load(tmp_path / "d.npz")
            except ProfileFormatError:
                continue
            loaded_without += not loaded.has_log_probs
    assert loaded_without == 0


def test_version_3_files_carry_a_checksum_and_their_array_list(tmp_path):
    arrays, meta = read_arrays(FIXTURE / "et.npz", "et-profile")
    path = write_arrays(tmp_path / "et.npz", "et-profile", arrays, meta)
    header = json.loads(read_header(path))
    assert header["version"] == 3 and header["arrays"] == sorted(arrays) and len(header["sha256"]) == 64
    import zipfile

    with zipfile.ZipFile(path) as archive:  # the conv times changed, the header kept: the checksum fails
        members = {name: archive.read(name) for name in archive.namelist()}
    changed = dict(arrays, conv=arrays["conv"] * 2)
    write_arrays(tmp_path / "other.npz", "et-profile", changed, meta)
    with zipfile.ZipFile(tmp_path / "other.npz") as archive:
        members["conv.npy"] = archive.read("conv.npy")
    with zipfile.ZipFile(tmp_path / "forged.npz", "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ProfileFormatError, match="fails its SHA-256 checksum"):
        read_arrays(tmp_path / "forged.npz", "et-profile")
    write_arrays(tmp_path / "extra.npz", "et-profile", arrays | {"spare": np.zeros(3)}, meta)
    from einet.formats.profiles import ETRecord

    with pytest.raises(ProfileFormatError, match="unexpected array 'spare'"):
        ETRecord.load(tmp_path / "extra.npz")


def read_header(path: Path) -> str:
    with np.load(path) as archive:
        return bytes(archive["__header__"]).decode()


@pytest.mark.parametrize("change, match", [
    ({"mask": "abc"}, r"mask must be a list of 1 to .* booleans"),
    ({"mask": [1, 0]}, r"mask must be a list of 1 to .* booleans"),
    ({"mask": []}, r"mask must be a list"),
    *(({"rule": {"name": "latest", "time_zero_class": bad, "weights": None, "time_zero_accuracy": 0.5}},
        r"time_zero_class") for bad in (2.5, True)),
    ({"planning_seconds": -1}, r"planning_seconds must lie in"),
    ({"planning_seconds": "NaN"}, r"planning_seconds must be a number"),
    ({"predictor": "../elsewhere.npz", "policy": "EINet"}, r"must be a file in the deployment's folder"),
    ({"predictor": "/etc/passwd", "policy": "EINet"}, r"must be a file in the deployment's folder"),
    ({"scale": 10**400}, r"scale must"),
    ({"dist": "cauchy"}, r"dist must be one of"),
    ({"threshold": 0.9}, r"exactly one of a mask and a threshold"),
    ({"validation": {"a": "high"}}, r"held-out score of 'a' must be a number"),
    ({"surprise": 1}, r"unknown field 'surprise'"),
    ({"version": True}, r"not an einet deployment"),
    ({"format": "einet-deployment!"}, r"not an einet deployment"),
])
def test_deployment_fields_are_typed_and_range_checked(tmp_path, change, match):
    from einet.evaluation.select import Deployment, load_deployment, save_deployment


    save_deployment(tmp_path / "d.json", Deployment("static 100%", AnswerRule("latest"), "normal", mask=(True, True)))
    record = json.loads((tmp_path / "d.json").read_text())
    (tmp_path / "edited.json").write_text(json.dumps(record | change))
    with pytest.raises(ValueError, match=f"fails its SHA-256 checksum|{match}"):  # version 3: any edit at all
        load_deployment(tmp_path / "edited.json")
    from einet.formats.deployment import _record_digest

    edited = record | change  # signed again: every field is still checked
    (tmp_path / "signed.json").write_text(json.dumps(edited | {"sha256": _record_digest(edited)}))
    with pytest.raises(ValueError, match=match):
        load_deployment(tmp_path / "signed.json")


def test_deployment_json_depth_and_literals_are_bounded(tmp_path):
    from einet.evaluation.select import load_deployment

    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="nested 200000 deep"):
        load_deployment(tmp_path / "deep.json")
    (tmp_path / "nan.json").write_text('{"format": "einet-deployment", "version": 2, "scale": NaN}')
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        load_deployment(tmp_path / "nan.json")


def test_a_deployment_and_its_predictor_never_share_a_name(tmp_path):
    from einet.evaluation.select import DEPLOYED_PREDICTOR, Deployment, save_deployment


    deployment = Deployment("EINet", AnswerRule("latest"), "normal", predictor=DEPLOYED_PREDICTOR)
    with pytest.raises(ValueError, match="also the name of its predictor"):
        save_deployment(tmp_path / DEPLOYED_PREDICTOR, deployment, predictor=object())
    assert not any(tmp_path.iterdir())


def test_a_plan_of_another_length_is_refused_when_built():
    import einet
    from einet.evaluation.select import Deployment, deployed_policy


    deployment = Deployment("static 100%", AnswerRule("latest"), "normal", mask=(True, True))
    et = einet.ETProfile([1.0, 1.0, 1.0], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="mask has 2 exits but the ET-profile 3 blocks"):
        deployed_policy(deployment, et, einet.Uniform(0.0, 3.3))


# ---------------------------------------------------------------- numbers, through the API

def test_exit_times_are_drawn_in_bounded_work_however_little_mass_lies_above_zero():
    import einet
    from einet.distributions import sample_exit_times

    started = time.perf_counter()
    draws = sample_exit_times(einet.Normal(-8.2, 1.0), (10_000,), np.random.default_rng(0))
    assert time.perf_counter() - started < 5.0  # it never returned before
    assert np.all(draws >= 0) and abs(draws.mean() - 1 / 8.2) < 0.02  # the tail's mean is about 1/|mean|
    usual = sample_exit_times(einet.Normal(5.0, 2.0), (100_000,), np.random.default_rng(0))
    assert abs(usual.mean() - 5.0351) < 0.02  # truncated N(5, 2): 5 + 2 phi(2.5) / Phi(2.5)


@pytest.mark.parametrize("field, value", [("lr", float("inf")), ("lr", float("nan")), ("momentum", float("nan")),
                                          ("weight_decay", -1.0), ("exit_weights", (1.0, float("nan")))])
def test_train_config_refuses_non_finite_settings(field, value):
    pytest.importorskip("torch")
    from einet.training import TrainConfig

    with pytest.raises(ValueError, match=r"finite|must lie in"):
        TrainConfig(**{field: value})


def test_a_loss_that_turns_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from einet.data import ImageArrays, dataset_for
    from einet.formats.checkpoint import load_checkpoint
    from einet.models import build
    from einet.training import TrainConfig, train
    from einet.training import loop as module

    rng = np.random.default_rng(0)
    arrays = ImageArrays(rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8), rng.integers(0, 2, 16),
                         ("a", "b"))
    real, calls = module.exit_losses, []

    def losses(*args, **kwargs):  # the second epoch's losses turn NaN
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) > 2 else value

    monkeypatch.setattr(module, "exit_losses", losses)
    model = build("b_alexnet", num_classes=2, in_channels=1, width=0.125)
    spec = {"name": "b_alexnet", "num_classes": 2, "in_channels": 1, "width": 0.125}
    with pytest.raises(module.DivergedError, match=r"loss became nan in epoch 2 .*keeps epoch 1's weights"):
        train(model, dataset_for("mnist", arrays, True), None, TrainConfig(epochs=3, batch_size=8), progress=False,
              checkpoint=tmp_path / "m.pt", model_spec=spec)
    _, state = load_checkpoint(tmp_path / "m.pt")
    assert len(state["history"]["loss"]) == 1
    assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())


def test_the_runtime_refuses_a_non_finite_input():
    torch = pytest.importorskip("torch")
    from einet.models import build
    from einet.policies import FixedPlan
    from einet.runtime import ElasticRuntime, NonFiniteError

    model = build("b_alexnet", num_classes=10, in_channels=1, width=0.125).eval()
    with ElasticRuntime(model, FixedPlan([True, True, True], "static 100%")) as runtime:
        x = torch.zeros(1, 1, 28, 28)
        assert runtime.infer(x).prediction is not None
        x[0, 0, 3, 3] = float("nan")
        with pytest.raises(NonFiniteError, match=r"exit 0 answered with non-finite scores"):
            runtime.infer(x)
        x[0, 0, 3, 3] = float("inf")
        with pytest.raises(NonFiniteError):
            runtime.infer(x)
        with pytest.raises(TypeError, match="tensor"):
            runtime.infer(np.zeros((1, 1, 28, 28)))
        assert runtime.infer(torch.zeros(1, 1, 28, 28)).prediction is not None  # still serving


def test_training_refuses_images_of_the_wrong_channels_naming_the_sample():
    torch = pytest.importorskip("torch")
    from einet.models import build
    from einet.training import TrainConfig, train

    class ThreeChannels(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.zeros(3, 28, 28), 1

    spec = {"name": "b_alexnet", "num_classes": 2, "in_channels": 1, "width": 0.125}
    model = build("b_alexnet", num_classes=2, in_channels=1, width=0.125)
    with pytest.raises(ValueError, match=r"sample \d+ of the ThreeChannels is an image of shape \(3, 28, 28\), but "
                                         r"\(1, None, None\)"):
        train(model, ThreeChannels(), None, TrainConfig(epochs=1, batch_size=4), progress=False, model_spec=spec)
