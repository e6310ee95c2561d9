"""The `einet` command: the committed fixtures through evaluate, fit-predictor and report; tiny
synthetic datasets through train; every user mistake as one line on stderr with exit status 2."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import einet
from einet import cli
from einet.cli import evaluate as evaluate_command
from einet.cli import main
from einet.cli.common import _device as device
from einet.cli.common import _progress as progress
from tests.helpers import fake_cifar10

FIXTURE = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "vgg16_fine_w05_cuda"
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
needs_fixture = pytest.mark.skipif(not FIXTURE.exists(), reason="fixture missing")


def run_einet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "einet", *args], capture_output=True, text=True)


def test_help_lists_every_command():
    out = run_einet("--help")
    assert out.returncode == 0
    for command in ("train", "profile", "fit-predictor", "evaluate", "report", "demo"):
        assert command in out.stdout


def test_version_and_python_dash_m():
    out = run_einet("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"einet {einet.__version__}"


def test_every_option_has_help_and_shows_its_default():
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"einet {name} {action.option_strings[0]} has no help text"
            shown = action.default not in (None, False, argparse.SUPPRESS) and not action.required
            if shown:
                assert "(default:" in parser._get_formatter()._format_action(action), (name, action.dest)
        assert "--debug" in text
    for name in ("train", "profile", "demo"):
        text = re.sub(r"\s+", " ", commands.choices[name].format_help())
        assert "--device {auto,cpu,cuda}" in text and "(default: auto)" in text and "--quiet" in text


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress(argparse.Namespace(quiet=False))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress(argparse.Namespace(quiet=False))
    assert not progress(argparse.Namespace(quiet=True))


@needs_torch
def test_device_auto_is_cuda_only_when_available():
    import torch

    assert device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device("cpu") == "cpu"


@pytest.mark.slow
@needs_torch
@needs_fixture
def test_fit_predictor_evaluate_and_report(tmp_path, capsys):
    from einet.formats.profiles import ETRecord

    predictor = tmp_path / "p.npz"
    assert main(["fit-predictor", "--cs", str(FIXTURE / "cs-holdout.npz"), "--epochs", "2", "--hidden", "16",
                 "--out", str(predictor)]) == 0
    assert main(["evaluate", "--profiles", str(FIXTURE), "--predictor", str(predictor), "--draws", "2",
                 "--dist", "normal", "--out", str(tmp_path / "table")]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| EINet |" in table and "| clairvoyant |" in table
    assert (tmp_path / "table.csv").read_text().startswith("policy,")
    full_ms = 1e3 * ETRecord.load(FIXTURE / "et.npz").profile.total()
    assert main(["evaluate", "--profiles", str(FIXTURE), "--predictor", str(predictor), "--draws", "2",
                 "--horizon-ms", str(2 * full_ms)]) == 0  # deadlines in milliseconds: the scale follows
    assert "(scale 2 x full inference" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert main(["report", "--profiles", str(FIXTURE), "--predictor", str(predictor), "--scales", "0.5", "1.0",
                 "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 1000


@pytest.mark.slow
@needs_torch
def test_demo_runs_end_to_end_on_the_embedded_data(capsys):
    assert main(["demo", "--epochs", "1", "--samples", "30", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| EINet |" in out and "real-time accuracy" in out and "done in" in out


# ---------------------------------------------------------------- tiny synthetic datasets

def save_model(path: Path, **spec: object) -> Path:
    """A checkpoint of an untrained zoo model, as `einet train` writes them."""
    from einet.formats.checkpoint import save_checkpoint
    from einet.models import build

    spec = {"name": "b_alexnet", "num_classes": 10, "in_channels": 1, "width": 0.125} | spec
    kwargs = dict(spec)
    save_checkpoint(path, build(kwargs.pop("name"), **kwargs), spec)  # type: ignore[arg-type]
    return path


TINY_TRAIN = ["--model", "b_alexnet", "--width", "0.125", "--epochs", "1", "--batch-size", "8", "--threads", "1",
              "--device", "cpu"]


@needs_torch
def test_same_seed_gives_bit_identical_weights(tmp_path, capsys):
    """--seed fixes initial weights, held-out split, data order and augmentation (CIFAR: crops and flips)."""
    import torch

    data = fake_cifar10(tmp_path / "data")
    for run in ("a", "b", "c"):
        seed = "1" if run == "c" else "7"
        assert main(["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN, "--seed", seed,
                     "--out", str(tmp_path / f"{run}.pt")]) == 0
    capsys.readouterr()
    a, b, c = (torch.load(tmp_path / f"{run}.pt", weights_only=True) for run in "abc")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["generator"], b["generator"])  # the same data order and augmentation draws
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])  # the seed matters


@needs_torch
def test_train_with_bf16_and_channels_last_records_them(tmp_path, capsys):
    data = fake_cifar10(tmp_path / "data")
    assert main(["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN, "--precision", "bf16",
                 "--channels-last", "--out", str(tmp_path / "m.pt")]) == 0
    summary = json.loads((tmp_path / "m.summary.json").read_text())
    assert (summary["precision"], summary["memory_format"]) == ("torch.bfloat16", "torch.channels_last")
    assert main(["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN,
                 "--out", str(tmp_path / "n.pt")]) == 0
    summary = json.loads((tmp_path / "n.summary.json").read_text())
    assert (summary["precision"], summary["memory_format"]) == ("torch.float32", "torch.contiguous_format")


@needs_torch
def test_train_with_light_exits_profiles_with_them_named(tmp_path):
    from einet.formats.checkpoint import load_checkpoint
    from einet.formats.profiles import CSProfile

    data = fake_cifar10(tmp_path / "data")
    assert main(["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN, "--exit-head", "light",
                 "--out", str(tmp_path / "m.pt")]) == 0
    model, state = load_checkpoint(tmp_path / "m.pt")
    assert state["spec"]["exit_head"] == "light" and type(model.exits[0]).__name__ == "LightBranch"
    assert main(["profile", "--checkpoint", str(tmp_path / "m.pt"), "--dataset", "cifar10", "--data", str(data),
                 "--skip-et", "--quiet", "--out-dir", str(tmp_path / "p")]) == 0
    assert CSProfile.load(tmp_path / "p" / "cs-test.npz").meta["recipe"] == "joint, light exits"
    assert main(["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN, "--exit-weights", "2", "2", "0.5",
                 "--out", str(tmp_path / "w.pt")]) == 0
    assert main(["profile", "--checkpoint", str(tmp_path / "w.pt"), "--dataset", "cifar10", "--data", str(data),
                 "--skip-et", "--quiet", "--out-dir", str(tmp_path / "q")]) == 0
    meta = CSProfile.load(tmp_path / "q" / "cs-test.npz").meta
    assert (meta["recipe"], meta["exit_weights"]) == ("joint, exit weights 2x2/0.5", [2.0, 2.0, 0.5])


# ---------------------------------------------------------------- mistakes: one line, exit status 2

def assert_one_line_error(capsys, argv: list[str], match: str) -> None:
    """`einet ARGV` fails with status 2 and one line on stderr naming the problem, no traceback."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"einet {argv[0]}: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]


def test_mistake_unknown_device(capsys):
    for command in (["train", "--data", "x", "--out", "y.pt"], ["profile", "--data", "x", "--checkpoint", "c.pt",
                                                                 "--out-dir", "o"], ["demo"]):
        assert_one_line_error(capsys, [*command, "--device", "gpu"], r"--device: invalid choice: 'gpu'")


@needs_torch
def test_mistake_cuda_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(capsys, ["demo", "--device", "cuda"], r"--device cuda: torch sees no CUDA device")


def test_mistake_missing_argument(capsys):
    assert_one_line_error(capsys, ["train", "--data", "x"], r"required: --out")


@needs_torch
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_mistake_wrong_data(tmp_path, capsys, dataset):
    assert_one_line_error(capsys, ["train", "--dataset", dataset, "--data", str(tmp_path / "nowhere"), *TINY_TRAIN,
                                   "--out", str(tmp_path / "m.pt")], "nowhere")
    assert not (tmp_path / "m.pt").exists()


@needs_torch
def test_profile_skip_cs_retimes_only_and_skip_et_reprofiles_only_confidences(tmp_path, capsys):
    checkpoint = save_model(tmp_path / "m.pt", in_channels=3)
    data, out = fake_cifar10(tmp_path / "data"), tmp_path / "profiles"
    base = ["profile", "--dataset", "cifar10", "--data", str(data), "--checkpoint", str(checkpoint),
            "--out-dir", str(out), "--device", "cpu", "--warmup", "1", "--repeats", "3", "--holdout", "0.5"]
    files = ("et.npz", "cs-holdout.npz", "cs-test.npz")
    assert main(base) == 0
    first = {name: (out / name).read_bytes() for name in files}
    assert main([*base, "--skip-cs"]) == 0
    assert [(out / name).read_bytes() == first[name] for name in files] == [False, True, True]
    retimed = (out / "et.npz").read_bytes()
    assert main([*base, "--skip-et"]) == 0
    assert (out / "et.npz").read_bytes() == retimed
    assert "wrote " + str(out / "cs-holdout.npz") in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one or the other
        main([*base, "--skip-et", "--skip-cs"])


@needs_torch
def test_refit_exits_writes_a_checkpoint_whose_profiles_name_the_pools(tmp_path, capsys):
    from einet.formats.checkpoint import load_checkpoint
    from einet.formats.profiles import CSProfile

    data = fake_cifar10(tmp_path / "data", per_batch=16)
    checkpoint = save_model(tmp_path / "m.pt", in_channels=3, exit_head="light")
    assert main(["refit-exits", "--checkpoint", str(checkpoint), "--dataset", "cifar10", "--data", str(data),
                 "--holdout", "0.25", "--epochs", "1", "--threads", "1", "--quiet",
                 "--out", str(tmp_path / "r.pt")]) == 0
    assert "| 1 | 16x16 |" in capsys.readouterr().out  # B-AlexNet's first exit: a 16 x 16 map, pooled 4 x 4 before
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    model, state = load_checkpoint(tmp_path / "r.pt")
    pools = [model.exits[i].pool for i in (0, 1)]
    assert state["spec"]["exit_pools"] == pools == [8 if r["kept"] else 4 for r in summary["refit"]]
    assert main(["profile", "--checkpoint", str(tmp_path / "r.pt"), "--dataset", "cifar10", "--data", str(data),
                 "--holdout", "0.25", "--skip-et", "--quiet", "--out-dir", str(tmp_path / "p")]) == 0
    recipe = CSProfile.load(tmp_path / "p" / "cs-test.npz").meta["recipe"]
    kept = [i + 1 for i, pool in enumerate(pools) if pool == 8]
    assert recipe == "joint, light exits" + ({(): "", (1,): ", exit 1 pooled 8x8", (2,): ", exit 2 pooled 8x8",
                                              (1, 2): ", exits 1-2 pooled 8x8"}[tuple(kept)])


@needs_torch
def test_mistake_refit_exits_without_light_exits_or_onto_itself(tmp_path, capsys):
    data = str(fake_cifar10(tmp_path / "data"))
    paper = save_model(tmp_path / "paper.pt", in_channels=3)
    light = save_model(tmp_path / "light.pt", in_channels=3, exit_head="light")
    base = ["refit-exits", "--dataset", "cifar10", "--data", data, "--quiet"]
    assert_one_line_error(capsys, [*base, "--checkpoint", str(paper), "--out", str(tmp_path / "r.pt")],
                          r"no light exits to refit")
    assert_one_line_error(capsys, [*base, "--checkpoint", str(light), "--out", str(light)],
                          r"--out .*light\.pt would overwrite --checkpoint")
    assert_one_line_error(capsys, [*base, "--checkpoint", str(light), "--pool", "0", "--out", str(tmp_path / "r.pt")],
                          r"--pool: the value must lie in \[1, 64\], got 0")
    assert_one_line_error(capsys, [*base, "--checkpoint", str(light), "--pool", "33", "--out", str(tmp_path / "r.pt")],
                          r"pool must be a whole number in 1\.\.32, got 33")
    mnist = save_model(tmp_path / "mnist.pt", exit_head="light")
    assert_one_line_error(capsys, [*base, "--checkpoint", str(mnist), "--out", str(tmp_path / "r.pt")],
                          r"mnist\.pt takes 1-channel images and 10 classes, but .* 3-channel images .*: refit a")
    assert not (tmp_path / "r.pt").exists()


@needs_torch
def test_profile_with_a_second_look_doubles_the_exits_and_names_it(tmp_path):
    from einet.formats.profiles import CSProfile, ETRecord

    checkpoint = save_model(tmp_path / "m.pt", in_channels=3)
    data, out = fake_cifar10(tmp_path / "data"), tmp_path / "profiles"
    assert main(["profile", "--dataset", "cifar10", "--data", str(data), "--checkpoint", str(checkpoint),
                 "--out-dir", str(out), "--warmup", "1", "--repeats", "3", "--holdout", "0.5", "--quiet",
                 "--second-look", "flip"]) == 0
    cs, et = CSProfile.load(out / "cs-test.npz"), ETRecord.load(out / "et.npz")
    assert cs.num_exits == len(et.conv) == 6  # B-AlexNet's 3 exits, twice
    assert cs.meta["recipe"].endswith(", second look (flip)")
    assert main(["profile", "--dataset", "cifar10", "--data", str(data), "--checkpoint", str(checkpoint),
                 "--out-dir", str(out), "--holdout", "0.5", "--quiet", "--skip-et",
                 "--second-look", "flip", "--second-look-depth", "2"]) == 0
    cs = CSProfile.load(out / "cs-test.npz")
    assert cs.num_exits == 4 and cs.meta["recipe"].endswith(", second look (flip, depth 2 of 3)")


@needs_torch
def test_mistake_profile_second_look_depth_without_a_second_look_or_too_deep(tmp_path, capsys):
    checkpoint = save_model(tmp_path / "m.pt", in_channels=3)
    base = ["profile", "--dataset", "cifar10", "--data", str(fake_cifar10(tmp_path / "data")), "--checkpoint",
            str(checkpoint), "--out-dir", str(tmp_path / "profiles"), "--quiet"]
    assert_one_line_error(capsys, [*base, "--second-look-depth", "2"], r"--second-look-depth 2 needs --second-look")
    assert_one_line_error(capsys, [*base, "--second-look", "flip", "--second-look-depth", "7"],
                          r"depth must be a whole number of blocks in 1\.\.3, got 7")


@needs_torch
def test_mistake_mnist_checkpoint_profiled_on_cifar(tmp_path, capsys):
    checkpoint = save_model(tmp_path / "mnist.pt")
    data = fake_cifar10(tmp_path / "data")
    assert_one_line_error(capsys, ["profile", "--dataset", "cifar10", "--data", str(data), "--checkpoint",
                                   str(checkpoint), "--out-dir", str(tmp_path / "profiles"), "--device", "cpu"],
                          r"mnist\.pt takes 1-channel images and 10 classes, but .* 3-channel images")
    assert not (tmp_path / "profiles").exists()


@needs_torch
def test_mistake_train_resuming_a_checkpoint_of_another_model(tmp_path, capsys):
    data = fake_cifar10(tmp_path / "data")
    out = save_model(tmp_path / "m.pt", name="vgg16_fine", in_channels=3)
    before = out.read_bytes()
    assert_one_line_error(capsys, ["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN,
                                   "--out", str(out)], r"--out .*m\.pt holds a checkpoint of another model")
    assert out.read_bytes() == before


@needs_torch
def test_train_resumes_with_or_without_the_default_exit_head_spelled_out(tmp_path, capsys):
    data = fake_cifar10(tmp_path / "data")
    light = ["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN, "--out", str(tmp_path / "m.pt")]
    assert main([*light, "--exit-head", "light"]) == 0
    assert_one_line_error(capsys, light, r"holds a checkpoint of another model")  # the paper's head: another model
    import torch

    from einet.formats import checkpoint

    paper = ["train", "--dataset", "cifar10", "--data", str(data), *TINY_TRAIN, "--out", str(tmp_path / "p.pt")]
    assert main(paper) == 0
    state = torch.load(tmp_path / "p.pt", weights_only=False)
    state["spec"]["exit_head"] = "paper"  # the default written out (as a Python caller may): the same model
    state["sha256"] = checkpoint.state_digest(state)
    torch.save(state, tmp_path / "p.pt")
    assert main(paper) == 0
    assert_one_line_error(capsys, [*light, "--exit-head", "light", "--constructor", "torch.nn:Linear"],
                          r"--exit-head is for zoo models")


@needs_torch
def test_select_writes_a_deployment_that_pays_for_planning(tmp_path, capsys):
    from einet.evaluation.select import load_deployment

    profiles = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "b_alexnet_w025_cpu_light"
    base = ["select", "--profiles", str(profiles), "--dist", "uniform", "--rules", "latest", "--epochs", "1"]
    assert main([*base, "--planning-us", "1e6", "--out", str(tmp_path / "d.json")]) == 0
    deployment = load_deployment(tmp_path / "d.json")
    assert not deployment.policy.startswith("EINet") and deployment.planning_seconds == 0.0
    assert "chosen on held-out data" in capsys.readouterr().out
    assert_one_line_error(capsys, [*base, "--planning-us", "-1", "--out", str(tmp_path / "e.json")],
                          r"--planning-us: the value must lie in \[0, 1e\+06\], got -1.0")


@needs_torch
def test_select_chooses_among_networks(tmp_path, capsys):
    from einet.evaluation.select import load_deployment
    from einet.formats.profiles import ETRecord

    fixtures = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures"
    joint, light = (str(fixtures / f"b_alexnet_w025_cpu_{name}") for name in ("joint", "light"))
    base = ["select", "--dist", "uniform", "--rules", "latest", "--epochs", "1", "--planning-us", "0"]
    assert main([*base, "--profiles", joint, light, "--out", str(tmp_path / "d.json")]) == 0
    deployment = load_deployment(tmp_path / "d.json")
    assert deployment.network == light  # as measured: docs/anytime.md
    assert any(name.startswith(f"{joint} | ") for name in deployment.validation)
    assert f"chosen on held-out data: {light}: " in capsys.readouterr().out
    assert_one_line_error(capsys, [*base, "--profiles", joint, joint + "/", "--out", str(tmp_path / "e.json")],
                          r"--profiles names a folder twice")
    for flag, value, reason in (("--scale", "-1", r"must lie in \(0, 1e\+09\], got -1.0"),
                                ("--horizon-ms", "0", r"must lie in \(0, 1e\+09\], got 0.0"),
                                ("--horizon-ms", "nan", r"must be a finite number, got nan")):
        assert_one_line_error(capsys, [*base, "--profiles", joint, flag, value, "--out", str(tmp_path / "e.json")],
                              rf"argument {flag}: the value {reason}")
    assert main([*base, "--profiles", light, "--horizon-ms", "3", "--out", str(tmp_path / "h.json")]) == 0
    et = ETRecord.load(Path(light) / "et.npz").profile
    assert load_deployment(tmp_path / "h.json").scale == pytest.approx(3e-3 / et.total())
    capsys.readouterr()
    assert_one_line_error(capsys, [*base, "--profiles", joint, "--scale", "2", "--horizon-ms", "1", "--out",
                                   str(tmp_path / "e.json")], r"not allowed with argument")


def test_exit_head_choices_are_the_models_own():
    pytest.importorskip("torch")
    from einet.models.base import EXIT_HEADS

    train = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "exit_head")
    assert tuple(train.choices) == EXIT_HEADS


@needs_torch
def test_mistake_train_into_a_missing_folder(tmp_path, capsys):
    assert_one_line_error(capsys, ["train", "--data", "x", "--out", str(tmp_path / "nodir" / "m.pt"),
                                   "--device", "cpu"], r"the folder .*nodir does not exist")


@needs_torch
def test_mistake_demo_more_samples_than_embedded(capsys):
    assert_one_line_error(capsys, ["demo", "--samples", "5000", "--device", "cpu"],
                          r"--samples must lie in \[1, \d+\] \(the embedded test images\), got 5000")


@needs_torch
@needs_fixture
def test_mistake_report_into_a_missing_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, ["report", "--profiles", str(FIXTURE), "--predictor", str(FIXTURE / "predictor.npz"),
                                   "--out", "nodir/x.png"], r"--out nodir/x\.png: the folder nodir does not exist")


@needs_torch
@needs_fixture
def test_mistake_report_in_a_format_matplotlib_cannot_write(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert_one_line_error(capsys, ["report", "--profiles", str(FIXTURE), "--predictor", str(FIXTURE / "predictor.npz"),
                                   "--out", str(tmp_path / "curve.xyz")], r"\.xyz is no image format .*\.png")


@needs_torch  # evaluate and report read the predictor file with einet.predictor
@pytest.mark.parametrize("command", ["evaluate", "report"])
@pytest.mark.parametrize("missing", ["profiles", "predictor"])
def test_mistake_missing_files(tmp_path, capsys, command, missing):
    if missing == "predictor" and not FIXTURE.exists():
        pytest.skip("fixture missing")
    profiles = tmp_path / "nothing" if missing == "profiles" else FIXTURE
    argv = [command, "--profiles", str(profiles), "--predictor", str(tmp_path / "p.npz")]
    argv += ["--out", str(tmp_path / "curve.png")] if command == "report" else []
    if command == "report":
        pytest.importorskip("matplotlib")
    assert_one_line_error(capsys, argv, r"missing file .*(et|p)\.npz")


@needs_torch
@needs_fixture
def test_mistake_predictor_fitted_on_the_test_split(tmp_path, capsys):
    assert_one_line_error(capsys, ["fit-predictor", "--cs", str(FIXTURE / "cs-test.npz"),
                                   "--out", str(tmp_path / "p.npz")], "test-split")


def test_mistake_in_a_real_process_is_one_line_with_status_2():
    out = run_einet("train", "--data", "x", "--out", "m.pt", "--device", "gpu")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "einet train: error: argument --device: invalid choice: 'gpu' (choose from 'auto', 'cpu', 'cuda')"]


@needs_torch  # evaluate reads the predictor file with einet.predictor
def test_library_error_in_a_real_process_is_one_line_with_status_2(tmp_path):
    out = run_einet("evaluate", "--profiles", str(tmp_path), "--predictor", str(tmp_path / "p.npz"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"einet evaluate: error: missing file {tmp_path / 'et.npz'}"]


@needs_torch
def test_debug_shows_the_traceback(tmp_path):
    from einet.formats.npz import ProfileFormatError

    argv = ["evaluate", "--profiles", str(tmp_path), "--predictor", "p.npz"]
    with pytest.raises(ProfileFormatError, match="missing file"):
        main([*argv, "--debug"])
    with pytest.raises(ProfileFormatError, match="missing file"):
        main(["--debug", *argv])


@pytest.mark.parametrize("bug", [RuntimeError("deep inside torch"), AssertionError("a broken invariant"),
                                 ValueError("a plain ValueError nobody raised on purpose")])
def test_an_unexpected_exception_is_reported_as_a_bug_with_its_traceback_in_a_file(monkeypatch, capsys, tmp_path,
                                                                                   bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(evaluate_command, "cmd_evaluate", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where tempfile.gettempdir() points
    argv = ["evaluate", "--profiles", "x", "--predictor", "y"]
    assert main(argv) == 70
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "a bug in einet" in lines[0] and str(bug) in lines[0], lines
    report = Path(re.search(r"traceback is in (\S+?):", lines[0]).group(1))
    assert report.parent == tmp_path and report.name.startswith("einet-evaluate-")
    text = report.read_text()
    assert f"einet {einet.__version__}" in text and "command: einet evaluate --profiles x --predictor y" in text
    assert "Traceback (most recent call last)" in text and f"{type(bug).__name__}: {bug}" in text
    assert "python " in text and "torch " in text
    with pytest.raises(type(bug), match=str(bug)):
        main([*argv, "--debug"])


def test_a_bug_with_no_writable_report_folder_prints_its_traceback(monkeypatch, capsys, tmp_path):
    def broken(args):
        raise RuntimeError("deep inside torch")

    monkeypatch.setattr(evaluate_command, "cmd_evaluate", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    assert main(["evaluate", "--profiles", "x", "--predictor", "y"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("einet evaluate: internal error")


def test_a_bug_in_a_real_process_exits_70_naming_its_report(tmp_path):
    code = ("import sys; from einet import cli; from einet.cli import evaluate; "
            "evaluate.cmd_evaluate = lambda args: 1 / 0; "
            "sys.exit(cli.main(['evaluate', '--profiles', 'x', '--predictor', 'y']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ | {"TMPDIR": str(tmp_path)})
    assert out.returncode == 70, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "ZeroDivisionError" in out.stderr
    assert "ZeroDivisionError: division by zero" in next(tmp_path.glob("einet-evaluate-*.txt")).read_text()


def test_missing_extra_is_named(monkeypatch, capsys):
    def needs_torch_module(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(evaluate_command, "cmd_evaluate", needs_torch_module)
    assert main(["evaluate", "--profiles", "x", "--predictor", "y"]) == 2
    assert capsys.readouterr().err.strip() == "einet evaluate needs torch: pip install 'einet[torch]'"


# ---------------------------------------------------------------- the comparison plot

def test_plot_shows_a_lead_of_a_tenth_of_a_point_in_distinct_colours(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_rgba

    from einet.evaluation.tables import plot_curves

    names = ["EINet", "EINet (paper)", "static 25%", "static 50%", "static 100%", "dynamic 90%",
             "dynamic 95%", "dynamic 99%", "statistics", "single-exit", "clairvoyant"]
    xs = [0.25, 0.5, 0.75]
    curves = {name: [(x, 0.5 + 0.2 * x - 0.01 * k) for x in xs] for k, name in enumerate(names)}
    curves["EINet"] = [(x, y + 0.001) for x, y in curves["statistics"]]  # a lead of 0.1 pp
    code = ("import sys; from einet.evaluation.tables import plot_curves; "
            f"plot_curves({curves!r}, {str(tmp_path / 'c.png')!r}, 't'); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], check=True)  # no backend chosen, pyplot untouched
    assert (tmp_path / "c.png").stat().st_size > 1000
    fig = plot_curves(curves, str(tmp_path / "c.svg"), "title")
    accuracy, diff = fig.axes  # type: ignore[attr-defined]
    colours = [to_rgba(line.get_color()) for line in accuracy.get_lines()]
    assert len(colours) == len(names) == len(set(colours))
    einet_diff = next(line for line in diff.get_lines() if line.get_label() == "EINet")
    assert np.allclose(einet_diff.get_ydata(), 0.1)
    assert diff.get_yscale() == "symlog"
    bottom, top = diff.get_ylim()
    assert diff.transData.transform((0, 0.1))[1] - diff.transData.transform((0, 0))[1] > 0.1 * (
        diff.transData.transform((0, top))[1] - diff.transData.transform((0, bottom))[1])  # >= 10% of the panel


def tiny_profiles(folder: Path, samples: int = 40, exits: int = 3, classes: int = 4,
                  meta: dict | None = None) -> Path:
    """et.npz, cs-holdout.npz and cs-test.npz of a made-up model, with log-probabilities."""
    from einet.formats.profiles import CSProfile, ETRecord

    rng = np.random.default_rng(0)
    times = rng.uniform(1e-3, 2e-3, exits)
    ETRecord(times, times / 4, times, times, times / 4, times / 4).save(folder / "et.npz")
    for split in ("holdout", "test"):
        logits = rng.normal(0, 2, (samples, exits, classes))
        log_probs = logits - np.log(np.exp(logits).sum(2, keepdims=True))
        labels = rng.integers(0, classes, samples)
        prediction = log_probs.argmax(2)
        CSProfile(np.exp(log_probs.max(2)).astype(np.float32), prediction, prediction == labels[:, None], labels,
                  {"split": split, **(meta or {})}, log_probs.astype(np.float16)).save(folder / f"cs-{split}.npz")
    return folder


def tiny_predictor(path: Path, exits: int = 3, rule: dict | None = None) -> Path:
    """A predictor file with random weights (numpy only)."""
    from einet.formats.npz import write_arrays

    rng = np.random.default_rng(1)
    arrays = {"weight0": rng.normal(0, 0.3, (4, 2 * exits)), "bias0": np.zeros(4),
              "weight1": rng.normal(0, 0.3, (exits, 4)), "bias1": np.zeros(exits)}
    return write_arrays(path, "predictor", arrays, {"target": "correctness", "hidden": [4], "num_exits": exits,
                                                     "layers": 2, "rule": rule or {"name": "latest"}})


def test_table_has_a_row_per_model_and_finds_the_half_width_twin(tmp_path, capsys):
    folders = []
    for width, dataset in ((0.5, "cifar10"), (0.25, "cifar10"), (0.25, "mnist")):
        folder = tiny_profiles(tmp_path / f"w{width}{dataset}", meta={
            "zoo": "b_alexnet", "width": width, "device": "cpu", "dataset": dataset,
            "model": f"b_alexnet ({dataset}, width {width})"})
        tiny_predictor(folder / "predictor.npz")
        folders.append(str(folder))

    def compressed_column(profiles: list[str]) -> list[str]:
        assert main(["table", "--profiles", *profiles, "--dist", "normal", "--out", str(tmp_path / "t")]) == 0
        table = (tmp_path / "t.md").read_text()
        rows = [line for line in table.splitlines() if line.startswith("| b_alexnet")]
        assert len(rows) == len(profiles)
        return [row.split("|")[12].strip() for row in rows]  # column "compressed single-exit"

    compressed = compressed_column(folders[:2])
    assert compressed[0] != "-" and compressed[1] == "-"  # only the wider model has a half-width twin
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert {"einet_minus_statistics", "paper_einet_minus_statistics", "paper_einet_paired_ci95"} <= set(header)
    assert compressed_column([folders[0], folders[2]]) == ["-", "-"]  # a twin trained on other data is none


def test_evaluate_with_rule_ensemble_needs_no_torch(tmp_path):
    """The predictor file carries its rule (ensemble weights, time-zero answer); evaluating it
    runs on numpy and the native planner only."""
    from einet.formats.npz import write_arrays
    from einet.formats.predictor_file import load_native_predictor
    from einet.planner import NativePredictor

    profiles = tiny_profiles(tmp_path)
    rng = np.random.default_rng(1)
    weights = [rng.normal(0, 0.3, (4, 6)), rng.normal(0, 0.3, (3, 4))]
    biases = [np.zeros(4), np.zeros(3)]
    rule = {"name": "ensemble", "weights": [1.0, 0.5, 2.0], "time_zero_class": 1, "time_zero_accuracy": 0.25}
    write_arrays(tmp_path / "p.npz", "predictor", {"weight0": weights[0], "bias0": biases[0],
                                                   "weight1": weights[1], "bias1": biases[1]},
                 {"target": "correctness", "hidden": [4], "num_exits": 3, "layers": 2, "rule": rule})
    native, loaded = load_native_predictor(tmp_path / "p.npz")
    assert isinstance(native, NativePredictor) and loaded.weights == (1.0, 0.5, 2.0) and loaded.time_zero_class == 1
    code = ("import sys; sys.modules['torch'] = None; from einet.cli import main; "
            f"sys.exit(main(['evaluate', '--profiles', {str(profiles)!r}, '--predictor', {str(tmp_path / 'p.npz')!r},"
            " '--draws', '2']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rule ensemble + time-zero answer" in done.stdout and "| statistics |" in done.stdout


def test_run_refuses_an_unknown_engine_in_one_line_before_any_work(tmp_path, capsys):
    pytest.importorskip("torch")
    from einet.cli import main

    missing = tmp_path / "no.einet"  # not read: the engine is checked first
    assert main(["run", str(missing), "--images", str(tmp_path), "--engine", "c++"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "engine must be one of auto, python, native" in err
