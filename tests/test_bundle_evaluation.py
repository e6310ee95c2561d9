"""einet.evaluation.bundles: a bundle evaluated and run on images from Python (what `einet evaluate BUNDLE`
and `einet run` call), and the command saying when the figures are another device's."""

from __future__ import annotations

from importlib.resources import files
from types import SimpleNamespace

import numpy as np
import pytest

from einet.data import ImageArrays
from einet.errors import EinetValueError
from einet.evaluation.bundles import draw_deadlines, evaluate_bundle, remap_classes, run_images, simulate_run
from tests.helpers import tiny_bundle

MNIST = str(files("einet") / "resources")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The embedded MNIST slice, one epoch of a tiny B-AlexNet, no levers: a bundle in seconds."""
    pytest.importorskip("torch")
    return tiny_bundle(tmp_path_factory.mktemp("evaluation"), "tiny")


def images(classes: tuple[str, ...], labels: list[int]) -> ImageArrays:
    return ImageArrays(np.zeros((len(labels), 28, 28, 1), np.uint8), np.array(labels, np.int64), classes)


def test_remap_classes_labels_the_images_with_the_bundles_class_indices():
    remapped = remap_classes(images(("3", "7"), [0, 1, 1]), ("1", "3", "5", "7"))
    assert remapped.labels.tolist() == [1, 3, 3] and remapped.classes == ("1", "3", "5", "7")


def test_remap_classes_refuses_a_class_the_bundle_does_not_know():
    with pytest.raises(EinetValueError, match="class folders the bundle does not know: cat"):
        remap_classes(images(("3", "cat"), [0, 1]), ("1", "3"))


def test_draw_deadlines_fixed_or_drawn_from_the_bundles_distribution():
    bundle = SimpleNamespace(dist_kind="uniform", horizon_ms=2.0)
    fixed, what = draw_deadlines(bundle, 4, deadline_ms=5.0)
    assert fixed.tolist() == [0.005] * 4 and what == "deadline 5.0 ms"
    drawn, what = draw_deadlines(bundle, 500, seed=3)
    assert what == "uniform exit times over 2.000 ms" and drawn.min() >= 0 and drawn.max() <= 2e-3
    assert np.array_equal(drawn, draw_deadlines(bundle, 500, seed=3)[0])
    longer, what = draw_deadlines(bundle, 500, kind="normal", horizon_ms=20.0, seed=3)
    assert what == "normal exit times over 20.000 ms" and longer.mean() > 5 * drawn.mean()


@pytest.mark.slow
def test_evaluate_bundle_is_what_the_command_prints(built, capsys):
    from einet.bundle import read_bundle
    from einet.cli import main

    bundle = read_bundle(built)
    evaluation = evaluate_bundle(bundle, bundle.distribution())
    assert evaluation.own_device and evaluation.entry == bundle.entry("cpu")
    assert 0.0 <= evaluation.result.expected <= 1.0
    assert main(["evaluate", str(built)]) == 0
    out = capsys.readouterr()
    assert f"{100 * evaluation.result.expected:6.2f}%  tiny" in out.out and out.err == ""


@pytest.mark.slow
def test_a_bundle_without_this_device_is_evaluated_with_another_and_the_command_says_so(built, capsys, monkeypatch):
    from einet.bundle import Bundle, read_bundle
    from einet.cli import main
    from einet.formats.manifest import BundleError

    def no_entry(self, device="cpu", threads=None):
        raise BundleError("no ET-profile for this device")

    monkeypatch.setattr(Bundle, "entry", no_entry)
    bundle = read_bundle(built)
    evaluation = evaluate_bundle(bundle, bundle.distribution())
    assert not evaluation.own_device and evaluation.entry == bundle.devices[0]
    assert main(["evaluate", str(built)]) == 0
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "has no entry for this machine's cpu" in lines[0], lines
    assert f"evaluated with the entry of {bundle.devices[0].key}, so the figures are that device's" in lines[0]
    assert f"{100 * evaluation.result.expected:6.2f}%  tiny" in out.out


@pytest.mark.slow
@pytest.mark.parametrize("inline", [False, True], ids=["threaded", "inline"])
def test_run_images_answers_every_image_at_its_deadline_and_the_simulator_replays_them(built, inline):
    from einet import data
    from einet.bundle import read_bundle

    bundle = read_bundle(built)
    arrays = remap_classes(data.load("mnist", MNIST, "test").subset(np.arange(12)), bundle.classes)
    deadlines, _ = draw_deadlines(bundle, len(arrays), seed=1)
    stream = run_images(bundle, arrays, deadlines, inline=inline, warmup=2)
    assert len(stream.answers) == len(arrays) and np.array_equal(stream.deadlines, deadlines)
    held = [answer.prediction for answer in stream.answers]
    assert stream.correct.tolist() == [p == label for p, label in zip(held, arrays.labels)]
    simulated = simulate_run(bundle, stream, arrays)
    assert len(simulated) == 3 and all(chance.shape == (len(arrays),) for _, chance in simulated)
    assert all(chance.min() >= 0.0 and chance.max() <= 1.0 for _, chance in simulated)
