"""Hostile use of a bundle's runtime and of the bundle commands (the product-path audit's findings 10,
14, 15, 16, 17): every input checked against what the bundle says, every option used or refused, no
hang, and Ctrl-C one line."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import einet  # noqa: E402
from einet import bundle as bundles  # noqa: E402
from einet.cli import main  # noqa: E402
from tests.helpers import tiny_bundle  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The embedded MNIST slice, one epoch of a tiny B-AlexNet, no levers: a bundle in seconds."""
    return tiny_bundle(tmp_path_factory.mktemp("api"), "api")


@pytest.fixture(params=[False, True], ids=["threaded", "inline"])
def runtime(built, request):
    with einet.load(built, inline=request.param) as runtime:
        yield runtime


@pytest.mark.parametrize(("shape", "dtype"), [
    ((8, 1, 28, 28), torch.float32), ((1, 1, 64, 64), torch.float32), ((0, 1, 28, 28), torch.float32),
    ((1, 3, 28, 28), torch.float32), ((1, 28, 28), torch.float32), ((1, 1, 28, 28), torch.uint8),
    ((1, 1, 10000, 10000), torch.float32),
])
def test_finding_10_an_input_the_bundle_does_not_take_is_refused(runtime, shape, dtype):
    x = torch.zeros(1, 1, 1, 1).expand(shape) if shape[-1] > 100 else torch.zeros(shape, dtype=dtype)  # (no 400 MB)
    with pytest.raises(ValueError, match=r"the input must be one normalised image.*runtime\.prepare"):
        runtime.infer(x)
    assert runtime.infer(torch.zeros(1, 1, 28, 28)).prediction is not None  # still serving


def test_finding_10_prepare_is_the_way_in_for_raw_images(built, runtime):
    bundle = bundles.read_bundle(built)
    images = bundle.timing_images()[:4]
    x = runtime.prepare(images[0])  # one [H, W, C] image
    assert x.shape == (1, 1, 28, 28) and torch.equal(x, bundle.preprocess(images[:1]))
    assert runtime.infer(x).prediction is not None
    assert runtime.prepare(images).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="uint8"):
        runtime.prepare(images.astype(np.float32))


def _within(seconds, call):
    """`call()` in a thread: its error, or a failure if it has not returned within `seconds` (a hang)."""
    outcome = []

    def run():
        try:
            call()
            outcome.append(None)
        except BaseException as error:  # (what the call raised is the result)
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the call hung"
    return outcome[0]


@pytest.mark.parametrize("call_back", ["close", "infer", "reset_profile"])
def test_finding_15_an_interrupt_that_calls_back_into_its_runtime_is_refused_not_a_hang(runtime, call_back):
    x = torch.zeros(1, 1, 28, 28)
    back = {"close": runtime.close, "infer": lambda: runtime.infer(x), "reset_profile": runtime.reset_profile}

    def interrupt():
        back[call_back]()
        return False

    error = _within(20, lambda: runtime.infer(x, interrupt=interrupt))
    assert isinstance(error, RuntimeError) and "own infer()" in str(error)
    assert runtime.infer(x).prediction is not None  # the runtime is not left locked


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"threads": 0}, ValueError, "threads must lie in"), ({"threads": -1}, ValueError, "threads must lie in"),
    ({"threads": 1.5}, TypeError, "threads must be an integer"), ({"threads": True}, TypeError, "threads must be"),
    ({"device": None}, TypeError, "device must be a string"), ({"device": "meta"}, ValueError, "not 'meta'"),
    ({"device": "gpu"}, ValueError, "not a device name"), ({"adapt": "no"}, TypeError, "adapt must be"),
    ({"inline": "yes"}, TypeError, "inline must be"), ({"constructor": 3}, TypeError, "constructor must be"),
])
def test_finding_16_load_checks_its_options(built, options, error, message):
    with pytest.raises(error, match=message):
        einet.load(built, **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA")
def test_finding_16_cuda_without_cuda_is_one_clear_error(built):
    with pytest.raises(ValueError, match="no such CUDA device"):
        einet.load(built, device="cuda")


@pytest.mark.parametrize("argv", [
    ["evaluate", "{b}", "--scale", "2"], ["evaluate", "{b}", "--out", "{t}/table"], ["evaluate", "{b}", "--draws", "5"],
    ["evaluate", "{b}", "--rule", "latest"], ["profile", "{b}", "--checkpoint", "{t}/m.pt"],
    ["profile", "{b}", "--out-dir", "{t}/p"],
])
def test_finding_14_an_option_a_bundle_command_does_not_use_is_refused(built, tmp_path, capsys, argv):
    argv = [a.format(b=built, t=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"does not use {argv[2]}" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_finding_17_ctrl_c_is_one_line(built, monkeypatch, capsys):
    from einet import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "build", interrupted)
    assert main(["build", str(built.parent / "c.toml")]) == 130
    err = capsys.readouterr().err
    assert err == "einet build: interrupted; run the same command again to resume\n"


# The peak of what Python allocates from einet.load to the first answer (the manifest is read by Python:
# its cost shows here; the process's peak RSS is set earlier, by importing torch).
_LOAD_PEAK = """
import sys, tracemalloc, einet, torch
import einet.bundle, einet.runtime
tracemalloc.start()
runtime = einet.load(sys.argv[1], adapt=False, inline=True)
runtime.infer(torch.zeros(1, 1, 28, 28))
print(tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.slow
def test_finding_11_load_and_infer_on_a_manifest_with_a_15_mb_string_peak_within_3x_the_file(built, tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    from einet.formats import manifest as manifests

    big = tmp_path / "big.einet"
    shutil.copytree(built, big)
    record = json.loads((big / "manifest.json").read_text())
    record["provenance"]["note"] = "x" * (15 * 1024**2)
    record["sha256"] = manifests.manifest_digest(record)
    (big / "manifest.json").write_text(json.dumps(record))
    peaks = [int(subprocess.run([sys.executable, "-c", _LOAD_PEAK, str(path)], capture_output=True, text=True,
                                check=True, timeout=300).stdout) for path in (built, big)]
    size = (big / "manifest.json").stat().st_size
    print(f"\npeak {peaks[0] / 2**20:.0f} MB plain, {peaks[1] / 2**20:.0f} MB with a {size / 2**20:.1f} MB manifest: "
          f"{(peaks[1] - peaks[0]) / size:.2f}x the file")
    assert peaks[1] - peaks[0] <= 3 * size
