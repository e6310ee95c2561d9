"""The Python-free program (cpp/einet_run.cpp, built by CMake with EINET_NATIVE=ON against the installed torch's
libtorch) on a bundle exported by `einet export-native`: on replayed part times it answers as the Python loop
at every deadline, for the deployed policy, EINet's session and rule ensemble with a time-zero answer;
uninterrupted, as einet.load's static runtime; uint8 images are normalised as runtime.prepare does; a bad
option, input or export is one line on stderr and exit status 2."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet import forms  # noqa: E402
from einet.bundle import read_bundle  # noqa: E402
from einet.cli import main  # noqa: E402
from einet.models import compiled  # noqa: E402
from einet.native_export import MANIFEST, export_native  # noqa: E402
from einet.policies import EINet  # noqa: E402
from einet.policies.base import EveryExit  # noqa: E402
from einet.policies.fixed import FixedPlan  # noqa: E402
from einet.rules import AnswerRule  # noqa: E402
from einet.runtime._worker import Job  # noqa: E402
from einet.runtime.replay import ReplayedLoop  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(compiled.compiler() is None, reason="no C++ compiler")]

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 12


@pytest.fixture(scope="session")
def einet_run(tmp_path_factory):
    """The program, built once per run by CMake (Release, EINET_NATIVE=ON) against this torch's libtorch; with
    EINET_NATIVE_SANITIZE=1 (.ci/run), under AddressSanitizer and UBSan instead, so that every test here runs
    the native loop (einet/native/loop.hpp) under them."""
    cmake = shutil.which("cmake")
    generator = "Ninja" if shutil.which("ninja") else "Unix Makefiles" if shutil.which("make") else None
    if cmake is None or generator is None:
        pytest.skip("no cmake" if cmake is None else "no ninja or make")
    import torch.utils

    build = tmp_path_factory.mktemp("einet-run-build")
    sanitize = os.environ.get("EINET_NATIVE_SANITIZE") == "1"
    for step in ([cmake, "-S", str(ROOT), "-B", str(build), "-G", generator, "-DCMAKE_BUILD_TYPE=Release",
                  f"-DEINET_SANITIZE={'ON' if sanitize else 'OFF'}", "-DEINET_NATIVE=ON",
                  f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                 [cmake, "--build", str(build), "--target", "einet-run"]):
        done = subprocess.run(step, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(step[:3])} failed:\n{(done.stdout + done.stderr)[-3000:]}"
    return build / "einet-run"


@pytest.fixture(scope="module")
def exported(compiled_bundle_files, tmp_path_factory):
    """The bundle read, its compiled network, the replayed times, the export of its deployment and the test
    images saved as tensors (uint8 images, and normalised by runtime.prepare)."""
    path, cache = compiled_bundle_files
    folder = tmp_path_factory.mktemp("native-program")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EINET_CACHE_DIR", str(cache))
        bundle = read_bundle(path)
        entry = bundle.entry("cpu")
        network = compiled.load_compiled(forms._key(bundle, bundle.threads), bundle.num_exits)
        export_native(path, folder / "deployed")
    images = bundle.timing_images()[:SAMPLES]
    torch.save(torch.from_numpy(images), folder / "images.pt")
    torch.save(bundle.preprocess(images), folder / "inputs.pt")
    et = bundle.et(entry).profile
    return {"path": path, "cache": cache, "bundle": bundle, "entry": entry, "network": network, "et": et,
            "folder": folder, "deployed": folder / "deployed", "x": bundle.preprocess(images)}


def program(einet_run, *args):
    return subprocess.run([str(einet_run), *map(str, args)], capture_output=True, text=True, timeout=300)


def answers(done):
    """The program's answers: (index, prediction, exit, confidence, interrupted, elapsed ms) per sample."""
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "# index prediction exit confidence interrupted elapsed_ms"
    return [(int(k), int(p), int(e), float(c), bool(int(i)), float(ms))
            for k, p, e, c, i, ms in (line.split() for line in lines[1:])]


def replayed(network, rule, policy, et, x, deadline):
    """The Python loop on the replayed times, answered as the runtime answers at `deadline` (seconds; inf:
    none): (prediction, exit, confidence, interrupted, elapsed seconds), -1 for none."""
    job, loop = Job(x, policy, 0.0), ReplayedLoop(network, rule, et.conv, et.branch)
    stopped = loop.run(job, None, deadline)
    ended = loop.times.now  # (the virtual clock, from the job's start at 0)
    finished = not stopped and not ended > deadline
    held, _ = job.held(ended if finished else min(ended, deadline))
    exit, prediction, confidence = (None, rule.time_zero_class, 0.0) if held is None else held
    return (-1 if prediction is None else prediction, -1 if exit is None else exit, confidence, not finished, ended)


def deadlines_ms(et):
    """Deadlines before block 0, inside every part (each branch run) and after the end, in ms."""
    ends = np.cumsum(np.ravel(np.column_stack([et.conv, et.branch])))
    inside = np.diff(np.concatenate([[0.0], ends])) / 2 + np.concatenate([[0.0], ends[:-1]])
    return [0.0, *(1e3 * inside).tolist(), float(2e3 * ends[-1])]


def configurations(exported):
    """(policy, rule) to export and replay: the deployed ones, EINet's session, and rule ensemble with a
    time-zero answer over every exit."""
    bundle, entry, et = exported["bundle"], exported["entry"], exported["et"]
    rng = np.random.default_rng(0)
    n = bundle.num_exits
    predictor = einet.NativePredictor([rng.normal(size=(8, 2 * n)), rng.normal(size=(n, 8))],
                                      [np.zeros(8), np.zeros(n)], True)
    rule = entry.deployment.rule
    return {"deployed": (bundle.policy(entry, et, None, bundle.predictor(entry)), rule),
            "EINet": (EINet(predictor, et, bundle.distribution(), rule, first_plan=[False, True, True], margin=0.005),
                      rule),
            "ensemble": (EveryExit(), AnswerRule("ensemble", (0.5, 1.0, 2.0), time_zero_class=3,
                                                 time_zero_accuracy=0.1))}


@pytest.mark.parametrize("name", ["deployed", "EINet", "ensemble"])
def test_on_replayed_times_the_program_answers_as_the_python_loop_at_every_deadline(einet_run, exported, name,
                                                                                     tmp_path, monkeypatch):
    policy, rule = configurations(exported)[name]
    monkeypatch.setenv("EINET_CACHE_DIR", str(exported["cache"]))
    export_native(exported["path"], tmp_path / "export", policy=None if name == "deployed" else policy,
                  rule=None if name == "deployed" else rule)
    assert ((tmp_path / "export" / "session.txt").exists()) == (name == "EINet")
    et, x = exported["et"], exported["x"]
    limits, outcomes = deadlines_ms(et), set()
    for shift in range(len(limits)):  # every sample at every deadline, over the runs
        chosen = [limits[(k + shift) % len(limits)] for k in range(SAMPLES)]
        (tmp_path / "deadlines.txt").write_text("".join(f"{ms!r}\n" for ms in chosen))
        got = answers(program(einet_run, tmp_path / "export", exported["folder"] / "inputs.pt", "--replay",
                              "--deadlines", tmp_path / "deadlines.txt"))
        for k, (index, prediction, exit, confidence, interrupted, elapsed_ms) in enumerate(got):
            want = replayed(exported["network"], rule, policy, et, x[k:k + 1], float(repr(chosen[k])) * 1e-3)
            assert (index, prediction, exit, interrupted) == (k, *want[:2], want[3]), (name, k, chosen[k])
            outcomes.add((exit, interrupted))
            assert confidence == pytest.approx(want[2], abs=2e-6) and elapsed_ms == pytest.approx(1e3 * want[4],
                                                                                                 abs=1e-3)
    assert (-1, True) in outcomes and any(e >= 0 and i for e, i in outcomes) and any(not i for _, i in outcomes), \
        outcomes  # stopped with none held yet, stopped with an exit's answer held, and ended
    every = answers(program(einet_run, tmp_path / "export", exported["folder"] / "inputs.pt", "--replay"))
    assert not any(a[4] for a in every)  # no deadline: none interrupted


def test_uninterrupted_the_program_answers_as_the_static_runtime(einet_run, exported, compiled_bundle):
    deployed = configurations(exported)["deployed"][0]
    export, policy = exported["deployed"], None
    if not isinstance(deployed, (FixedPlan, EveryExit)):  # a policy re-planning on the clock decides on each
        export, policy = exported["folder"] / "every-exit", EveryExit()  # run's own times: replayed above
        export_native(compiled_bundle, export, policy=policy)
    got = answers(program(einet_run, export, exported["folder"] / "inputs.pt"))
    late = answers(program(einet_run, export, exported["folder"] / "inputs.pt", "--deadline-ms", 0))
    x = exported["x"]
    with einet.load(compiled_bundle, adapt=False) as runtime:
        if policy is not None:
            runtime.policy = policy
        exact = isinstance(runtime.model, compiled.CompiledNetwork)  # (else the prepared form was timed quicker)
        for k in range(SAMPLES):
            a = runtime.infer(x[k:k + 1])
            assert got[k][1:3] == (a.prediction, -1 if a.exit is None else a.exit) and not got[k][4]
            assert got[k][3] == pytest.approx(a.confidence, abs=2e-6 if exact else 1e-3)
            stopped = runtime.infer(x[k:k + 1], interrupt=0.0)  # the deadline passes before any branch ends
            assert stopped.interrupted and late[k][1:3] == (stopped.prediction, -1) and late[k][4]


def test_uint8_images_are_normalised_as_runtime_prepare_does(einet_run, exported):
    images, prepared = exported["folder"] / "images.pt", exported["folder"] / "inputs.pt"
    for options in (["--replay"], ["--replay", "--deadline-ms", deadlines_ms(exported["et"])[3]]):
        assert program(einet_run, exported["deployed"], images, *options).stdout == \
            program(einet_run, exported["deployed"], prepared, *options).stdout
    bundle = exported["bundle"]
    assert torch.equal(torch.load(prepared), bundle.preprocess(bundle.timing_images()[:SAMPLES]))


def test_measure_prints_the_loops_cost_beside_the_direct_chain(einet_run, exported):
    done = program(einet_run, exported["deployed"], exported["folder"] / "inputs.pt", "--measure", 50)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("measure: 50 inferences each") and len(lines) == 4
    chain = float(re.fullmatch(r"direct chain ([\d.]+)", lines[1]).group(1))
    for line, what in zip(lines[2:], ("loop", "loop on the worker")):
        cost, more = re.fullmatch(rf"{what} ([\d.]+) \(([-+][\d.]+)\)", line).groups()
        assert float(cost) > 0 and float(more) == pytest.approx(float(cost) - chain, abs=0.11)


def _on_text(edit):
    """A change to the manifest's text, as a change to the export's folder."""
    def damage(folder):
        (folder / MANIFEST).write_text(edit((folder / MANIFEST).read_text()))
    return damage


def _edit(keyword, line):
    """The manifest's first line starting with `keyword` replaced by `line`."""
    return _on_text(lambda text: re.sub(f"(?m)^{keyword}.*$", line, text, count=1))


MANIFESTS = {  # what is done to a copy of the export, and what the one line must say
    "no manifest": (lambda folder: (folder / MANIFEST).unlink(), r"einet-native.txt: cannot be read"),
    "another magic": (_edit("einet-native", "einet-natives 1"), r"line 1 \(einet-natives\): expected 'einet-native'"),
    "another version": (_edit("einet-native", "einet-native 2"), r"line 1 .*version '2' is not supported"),
    "truncated": (_on_text(lambda text: text[:len(text) // 2]), r"truncated"),
    "not a number": (_edit("conv", "conv abc 0x1p-10 0x1p-10"), r"line \d+ \(conv\): 'abc' is not a finite number"),
    "a negative time": (_edit("branch", "branch -0x1p-10 0x1p-10 0x1p-10"), r"\(branch\): '-0x1p-10' is below"),
    "too few exits": (_edit("exits", "exits exit-0.pt2 exit-1.pt2"), r"\(exits\): expected 3 value\(s\), got 2"),
    "out of its folder": (_edit("blocks", "blocks ../block-0.pt2 block-1.pt2 block-2.pt2"),
                          r"'\.\./block-0\.pt2' is not a file name in the export's folder"),
    "a missing package": (lambda folder: (folder / "block-1.pt2").unlink(), r"\(blocks\): no such file: .*block-1"),
    "a damaged package": (lambda folder: (folder / "exit-2.pt2").write_bytes(b"not a package"),
                          r"its packages cannot be loaded"),
    "another torch": (_edit("torch", "torch 1.0.0"), r"compiled with torch '1\.0\.0', this program is built against"),
    "an unknown rule": (_edit("rule", "rule median"), r"\(rule\): unknown rule 'median'"),
    "a class beyond": (_edit("time_zero_class", "time_zero_class 10"), r"'10' is not an integer from -1 to 9"),
    "no branch": (_edit("policy", "policy mask 0 0 0"), r"\(policy\): the plan runs no branch"),
    "text after end": (_on_text(lambda text: text + "more\n"), r"text after 'end'"),
    "a damaged session": (lambda folder: (folder / "session.txt").write_text("einet-online-session 1\nblocks x\n"),
                          r"session\.txt: einet session file: line 2 \(blocks\)"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_malformed_export_is_one_line_and_exit_status_2(einet_run, exported, tmp_path, case):
    damage, says = MANIFESTS[case]
    source = tmp_path / "session" if case == "a damaged session" else exported["deployed"]
    if case == "a damaged session":
        policy = configurations(exported)["EINet"][0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("EINET_CACHE_DIR", str(exported["cache"]))
            export_native(exported["path"], source, policy=policy)
    folder = tmp_path / "export"
    shutil.copytree(source, folder)
    damage(folder)
    done = program(einet_run, folder, exported["folder"] / "inputs.pt", "--replay")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and re.match(r"einet-run: error: ", done.stderr), done.stderr
    assert re.search(says, done.stderr), done.stderr


def _save(value):
    return lambda folder: torch.save(value, folder / "bad.pt")


OPTIONS = {  # the arguments after the program (EXPORT: the export, INPUTS: its inputs), and what the line says
    "no arguments": ([], r"give EXPORT_DIR and INPUTS\.pt; usage: einet-run"),
    "an unknown option": (["EXPORT", "INPUTS", "--fast"], r"unknown option --fast"),
    "a negative deadline": (["EXPORT", "INPUTS", "--deadline-ms", "-1"], r"--deadline-ms takes a number from 0"),
    "a NaN deadline": (["EXPORT", "INPUTS", "--deadline-ms", "nan"], r"--deadline-ms takes a number"),
    "no value": (["EXPORT", "INPUTS", "--deadline-ms"], r"--deadline-ms needs a value"),
    "a negative warm-up": (["EXPORT", "INPUTS", "--warmup", "-1"], r"--warmup takes a number from 0"),
    "two deadlines": (["EXPORT", "INPUTS", "--deadline-ms", "1", "--deadlines", "x"], r"give --deadline-ms or"),
    "measure with replay": (["EXPORT", "INPUTS", "--measure", "5", "--replay"], r"--measure runs without deadlines"),
    "too few deadlines": (["EXPORT", "INPUTS", "--deadlines", "FEW"], r"holds 2 deadlines for 12 inputs"),
    "a bad deadline line": (["EXPORT", "INPUTS", "--deadlines", "BADLINE"], r"line 2 takes a number"),
    "no export": (["MISSING", "INPUTS"], r"einet-native\.txt: cannot be read"),
    "no inputs": (["EXPORT", "MISSING"], r"missing: cannot be read"),
    "not a tensor file": (["EXPORT", "GARBAGE"], r"not a tensor saved by torch\.save"),
    "a dict": (["EXPORT", "DICT"], r"holds a GenericDict, not one tensor"),
    "float64 inputs": (["EXPORT", "FLOAT64"], r"float32 \[N, 1, 28, 28\] .* or uint8 images \[N, 28, 28, 1\], got "
                                              r"Double 4, 1, 28, 28"),
    "colour images": (["EXPORT", "RGB"], r"got Byte 2, 28, 28, 3"),
    "NaN inputs": (["EXPORT", "NAN"], r"the inputs hold NaN or inf values"),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_bad_options_and_inputs_are_one_line_and_exit_status_2(einet_run, exported, tmp_path, case):
    args, says = OPTIONS[case]
    (tmp_path / "FEW").write_text("1\n2\n")
    (tmp_path / "BADLINE").write_text("1\nsoon\n")
    (tmp_path / "GARBAGE").write_bytes(b"\x00not a zip")
    torch.save({"x": torch.zeros(1)}, tmp_path / "DICT")
    torch.save(torch.zeros(4, 1, 28, 28, dtype=torch.float64), tmp_path / "FLOAT64")
    torch.save(torch.zeros(2, 28, 28, 3, dtype=torch.uint8), tmp_path / "RGB")
    torch.save(torch.full((1, 1, 28, 28), math.nan), tmp_path / "NAN")
    paths = {"EXPORT": exported["deployed"], "INPUTS": exported["folder"] / "inputs.pt",
             "MISSING": tmp_path / "missing"}
    done = program(einet_run, *(paths.get(a, tmp_path / a if (tmp_path / a).exists() else a) for a in args))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("einet-run: error: "), done.stderr
    assert re.search(says, done.stderr), done.stderr


def test_export_native_says_in_one_line_what_it_cannot_export(compiled_bundle, tmp_path, monkeypatch, capsys):
    capsys.readouterr()
    assert main(["export-native", str(compiled_bundle), str(compiled_bundle / "out")]) == 2
    assert "would write into the bundle" in capsys.readouterr().err
    monkeypatch.setenv("EINET_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert main(["export-native", str(compiled_bundle), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not compiled for this CPU and 1 thread" in err and "einet compile" in err
    assert not (tmp_path / "out").exists()
