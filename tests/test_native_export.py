"""The export for the Python-free program, without a compiler (einet.native_export): the policies it takes and
the one it refuses, the manifest's text (pinned: csrc/include/einet/native/bundle.hpp reads it), and the folders
it refuses to write. The program itself, on a real export: tests/test_native_program.py."""

from __future__ import annotations

import numpy as np
import pytest

import einet
from einet import _core
from einet.errors import EinetValueError
from einet.native_export import MANIFEST, _check_out, escaped, manifest_text, native_policy
from einet.policies import EINet
from einet.policies.base import EveryExit
from einet.policies.fixed import FixedPlan
from einet.rules import AnswerRule


def einet_policy(signal: str = "confidence") -> EINet:
    rng = np.random.default_rng(0)
    predictor = einet.NativePredictor([rng.normal(size=(4, 6)), rng.normal(size=(3, 4))], [np.zeros(4), np.zeros(3)],
                                      True)
    et = einet.ETProfile([1e-3, 2e-3, 3e-3], [1e-4, 2e-4, 3e-4])
    return EINet(predictor, et, einet.Uniform(0.0, et.total()), "latest", signal=signal)


def test_a_fixed_plan_and_every_exit_are_masks_and_einet_is_its_session_file():
    assert native_policy(FixedPlan([True, False, True], "fixed"), 3) == ("mask 1 0 1", None)
    assert native_policy(EveryExit(), 3) == ("mask 1 1 1", None)
    policy = einet_policy()
    line, text = native_policy(policy, 3)
    assert line == "session session.txt" and text == policy.session.save()
    assert _core.OnlineSession.load(text).save() == text  # what the program reads back


def test_a_policy_that_needs_python_is_refused_by_name():
    class Custom(EveryExit):  # deciding in Python (a subclass deciding as its base is written as the base)
        name = "my custom policy"

        def run_branch(self, block, elapsed):
            return block % 2 == 0

    with pytest.raises(EinetValueError, match="'my custom policy' cannot run without Python"):
        native_policy(Custom(), 3)
    with pytest.raises(EinetValueError, match="cannot run without Python"):
        native_policy(einet_policy("entropy"), 3)  # reads its exits' log-probabilities, in Python


def test_the_manifest_format_is_pinned():
    class Spec:
        shape, mean, std = (1, 2, 3), (0.5,), (0.25,)

    text = manifest_text(name="tiny\\one\n", torch_version="2.13.0", threads=2, input_spec=Spec(),
                         classes=["a b", "c\r"], rule=AnswerRule("ensemble", (0.5, 1.0), time_zero_class=1),
                         policy_line="mask 1 0", blocks=["block-0.pt2", "block-1.pt2"],
                         exits=["exit-0.pt2", "exit-1.pt2"], conv=[1e-3, 0.0], branch=np.array([0.5, 2.0]),
                         horizon_ms=3.0)
    assert text == (
        "einet-native 1\n"
        "name tiny\\\\one\\n\n"
        "torch 2.13.0\n"
        "threads 2\n"
        "input 1 2 3\n"
        "mean 0x1.0000000000000p-1\n"
        "std 0x1.0000000000000p-2\n"
        "classes 2\n"
        "class a b\n"
        "class c\\r\n"
        "blocks block-0.pt2 block-1.pt2\n"
        "exits exit-0.pt2 exit-1.pt2\n"
        "conv 0x1.0624dd2f1a9fcp-10 0x0.0p+0\n"
        "branch 0x1.0000000000000p-1 0x1.0000000000000p+1\n"
        "horizon_ms 0x1.8000000000000p+1\n"
        "rule ensemble\n"
        "weights 0x1.0000000000000p-1 0x1.0000000000000p+0\n"
        "time_zero_class 1\n"
        "policy mask 1 0\n"
        "end\n")
    assert float.fromhex("0x1.0624dd2f1a9fcp-10") == 1e-3  # (hexadecimal floats: exact)
    plain = manifest_text(name="x", torch_version="2.13.0", threads=1, input_spec=Spec(), classes=["a"],
                          rule=AnswerRule("latest"), policy_line="session session.txt", blocks=["b"], exits=["e"],
                          conv=[1.0], branch=[1.0], horizon_ms=1.0)
    assert "\nweights\ntime_zero_class -1\npolicy session session.txt\nend\n" in plain
    assert escaped("a\\n\nb\r") == "a\\\\n\\nb\\r"


def test_the_export_writes_only_a_new_or_empty_folder_or_over_an_earlier_export(tmp_path):
    bundle = tmp_path / "b.einet"
    bundle.mkdir()
    for inside in (bundle, bundle / "out"):
        with pytest.raises(EinetValueError, match="into the bundle"):
            _check_out(inside, bundle)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EinetValueError, match="not a folder"):
        _check_out(tmp_path / "file", bundle)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(EinetValueError, match="holds other files"):
        _check_out(other, bundle)
    with pytest.raises(EinetValueError, match="does not exist"):
        _check_out(tmp_path / "missing" / "out", bundle)
    (tmp_path / "empty").mkdir()
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / MANIFEST).write_text("einet-native 1\n")
    (earlier / "block-0.pt2").write_text("")
    for fine in (tmp_path / "new", tmp_path / "empty", earlier):
        _check_out(fine, bundle)
