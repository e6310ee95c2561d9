"""Compiled blocks (einet.models.compiled, einet.forms, `einet compile`): packages equal to the network at
every exit, kept in the user's cache under an HMAC; a missing, changed or unverified entry is never run,
the prepared form runs instead and says so in one line; no compiler, no compile."""

from __future__ import annotations

import logging
import shutil

import pytest

torch = pytest.importorskip("torch")

from einet import bundle as bundles  # noqa: E402
from einet import forms  # noqa: E402
from einet.cli import main  # noqa: E402
from einet.models import compiled  # noqa: E402
from einet.models.inference import InferenceForm, verify  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(compiled.compiler() is None, reason="no C++ compiler")]


def _entry(bundle):
    return compiled._entry(forms._key(bundle, 1))


def test_compiled_blocks_answer_as_the_network_at_every_exit(compiled_bundle):
    bundle = bundles.read_bundle(compiled_bundle)
    network = forms.network_in(bundle, InferenceForm("compiled"), 1)
    assert isinstance(network, compiled.CompiledNetwork) and network.num_exits == bundle.num_exits
    images = bundle.preprocess(bundle.timing_images())
    assert verify(bundle.network(), network, images, one_at_a_time=True) <= 1e-4
    form = bundle.form(bundle.entry("cpu"))  # timed in the quicker of the prepared and compiled forms
    assert form.name in ("prepared", "compiled")
    with bundles.load(compiled_bundle) as runtime:
        assert runtime.infer(images[:1]).prediction is not None


@pytest.mark.parametrize("damage", ["package", "index", "missing"])
def test_a_changed_or_missing_entry_is_never_run(compiled_bundle, tmp_path, caplog, damage):
    bundle = bundles.read_bundle(compiled_bundle)
    entry = _entry(bundle)
    kept = tmp_path / "kept"
    shutil.copytree(entry, kept)
    try:
        if damage == "package":
            package = next(entry.glob("block-1*.pt2"))
            data = bytearray(package.read_bytes())
            data[len(data) // 2] ^= 1
            package.write_bytes(bytes(data))
        elif damage == "index":
            (entry / "index.json").write_text((entry / "index.json").read_text().replace('"format": 1', '"format":1'))
        else:
            shutil.rmtree(entry)
        with pytest.raises(compiled.CompileError):
            compiled.load_compiled(forms._key(bundle, 1), bundle.num_exits)
        with caplog.at_level(logging.WARNING, logger="einet"):
            network = forms.network_in(bundle, InferenceForm("compiled"), 1)
        assert not isinstance(network, compiled.CompiledNetwork)  # the prepared form, said in one line
        assert len(caplog.records) == 1 and "running the prepared form instead" in caplog.records[0].getMessage()
    finally:
        shutil.rmtree(entry, ignore_errors=True)
        shutil.copytree(kept, entry)


def test_a_cache_entry_is_keyed_by_what_the_packages_depend_on(compiled_bundle):
    bundle = bundles.read_bundle(compiled_bundle)
    keys = {forms._key(bundle, 1), forms._key(bundle, 2),
            compiled.cache_key("0" * 64, bundle.variant.as_dict(), 1)}
    assert len(keys) == 3
    with pytest.raises(compiled.CompileError, match="no compiled blocks"):
        compiled.load_compiled(forms._key(bundle, 2), bundle.num_exits)


def test_einet_compile_reuses_a_verified_entry_then_times_and_selects(compiled_bundle, capsys, monkeypatch):
    monkeypatch.setattr(compiled, "compile_parts", None)  # (a compile would fail: the cached entry is used)
    capsys.readouterr()
    assert main(["compile", str(compiled_bundle), "--threads", "1", "--repeats", "5", "--quiet"]) == 0
    assert "form: full inference" in capsys.readouterr().out


def test_without_a_compiler_einet_compile_says_so_in_one_line(compiled_bundle, monkeypatch, capsys):
    monkeypatch.setattr(compiled, "compiler", lambda: None)
    assert main(["compile", str(compiled_bundle), "--threads", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no C++ compiler" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_compiled_bundle_runs_on_the_native_engine_as_on_the_python_loop(compiled_bundle):
    from einet.runtime.native import native_module

    if native_module() is None:
        pytest.skip("the native module cannot be built here")
    bundle = bundles.read_bundle(compiled_bundle)
    images = bundle.preprocess(bundle.timing_images()[:5])
    if bundle.form(bundle.entry("cpu")).name != "compiled":  # the prepared form was quicker here
        with pytest.raises(ValueError, match="compiled blocks"):
            bundles.load(compiled_bundle, inline=True, engine="native")
        return
    with bundles.load(compiled_bundle, inline=True, engine="native", adapt=False) as native, \
            bundles.load(compiled_bundle, inline=True, adapt=False) as python:
        from einet.policies.base import EveryExit

        native.policy = python.policy = EveryExit()  # (the deployed policy may re-plan on the clock: not replayed)
        for k in range(len(images)):
            a, b = native.infer(images[k:k + 1]), python.infer(images[k:k + 1])
            assert (a.prediction, a.exit, a.exits_run) == (b.prediction, b.exit, b.exits_run)
