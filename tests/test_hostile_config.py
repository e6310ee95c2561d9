"""Hostile build configs and adaptation settings (the product-path audit's findings 1, 12, 13, 23): a
config is data, checked field by field before any work, and runs no code its reader did not name."""

from __future__ import annotations

import inspect
import json

import pytest
from torch import nn

import einet
from einet.build_config import read_config
from einet.cli import main
from einet.formats.adaptation import SETTINGS, check_adaptation
from einet.models.constructor import resolve_constructor
from einet.policies import EveryExit
from einet.runtime.adaptive import Adaptation, BlockTimes, ExitTimes

NETWORK_ZOO = "[network]\nzoo = 'b_alexnet'\n"


def _config(tmp_path, network=NETWORK_ZOO, extra=""):
    path = tmp_path / "c.toml"
    path.write_text(f"{extra}[data]\npath = 'x'\n{network}[output]\nbundle = 'b'\n")
    return path


def _shell_config(tmp_path, marker):
    return _config(tmp_path, f"[network]\nconstructor = 'os:system'\nkwargs = {{ command = 'touch {marker}' }}\n")


def test_finding_1_a_config_constructor_runs_only_when_named_on_the_command_line(tmp_path, capsys):
    marker = tmp_path / "ran"
    assert main(["build", str(_shell_config(tmp_path, marker))]) == 2
    err = capsys.readouterr().err
    assert "--constructor os:system" in err and err.count("\n") == 1
    assert not marker.exists()


def test_finding_1_a_trusted_constructor_that_cannot_make_a_network_is_refused_before_it_is_called(tmp_path, capsys):
    marker = tmp_path / "ran"
    assert main(["build", str(_shell_config(tmp_path, marker)), "--constructor", "os:system"]) == 2
    assert "not a class or a function that makes a network" in capsys.readouterr().err
    assert not marker.exists()


def returns_a_number() -> int:
    return 1


class Plain:
    pass


@pytest.mark.parametrize(("name", "message"), [
    ("os:system", "not a class or a function"), ("os:remove", "not a class or a function"),
    ("subprocess:Popen", "not an nn.Module"), ("os:sep", "not a class or a function"),
    (f"{__name__}:returns_a_number", "returns a int"), (f"{__name__}:Plain", "not an nn.Module"),
])
def test_finding_1_what_cannot_make_a_network_is_known_before_the_call(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_constructor(name)


def test_finding_1_a_module_class_or_an_unannotated_function_resolves():
    assert resolve_constructor("torch.nn:Linear") is nn.Linear
    assert callable(resolve_constructor(f"{__name__}:_config"))


@pytest.mark.parametrize("name", ["n" * 250, "a\u0007b", ""])
def test_finding_13_a_bad_name_is_refused_when_the_config_is_read(tmp_path, name):
    path = _config(tmp_path, extra=f"name = {json.dumps(name)}\n")
    with pytest.raises(ValueError, match="name must be a printable string"):
        read_config(path)


def test_finding_13_deeply_nested_kwargs_are_refused_when_the_config_is_read(tmp_path):
    nested = "1"
    for _ in range(20):
        nested = f"[{nested}]"
    path = _config(tmp_path, f"[network]\nconstructor = 'torch.nn:Linear'\nkwargs = {{ a = {nested} }}\n")
    with pytest.raises(ValueError, match=r"network\.kwargs must be a table of plain values"):
        read_config(path, "torch.nn:Linear")


@pytest.mark.parametrize(("network", "message"), [
    (NETWORK_ZOO + "exits = ['a']\n", "network.exits goes with network.constructor"),
    (NETWORK_ZOO + "kwargs = { a = 1 }\n", "network.kwargs goes with network.constructor"),
    (NETWORK_ZOO + "backbone_weights = 'w.pt'\n", "network.backbone_weights goes with network.constructor"),
    ("[network]\nconstructor = 'torch.nn:Linear'\nwidth = 0.5\n", "network.width goes with network.zoo"),
    ("[network]\nconstructor = 'torch.nn:Linear'\nexit_head = 'light'\n", "network.exit_head goes with network.zoo"),
    ("[network]\nzoo = 'resnet9000'\n", "'resnet9000' is not a zoo network"),
])
def test_finding_23_options_that_would_be_ignored_are_refused(tmp_path, network, message):
    with pytest.raises(ValueError, match=message):
        read_config(_config(tmp_path, network), "torch.nn:Linear")


def _adaptation(**settings):
    et = einet.ETProfile([1e-3] * 3, [1e-4] * 3)
    return Adaptation(lambda profile, dist: EveryExit(), et, einet.Uniform(0.0, et.total()), et.total(), **settings)


def test_finding_12_the_table_is_the_runtime_signature():
    defaults = {}
    for made in (Adaptation, BlockTimes, ExitTimes):
        defaults |= {p.name: p.default for p in inspect.signature(made).parameters.values()
                     if p.name in SETTINGS}
    assert defaults == {name: setting.default for name, setting in SETTINGS.items()}


@pytest.mark.parametrize("name", [name for name, setting in SETTINGS.items() if type(setting.default) is not bool])
def test_finding_12_a_setting_passes_the_config_and_the_manifest_exactly_when_the_runtime_takes_it(tmp_path, name):
    setting = SETTINGS[name]
    integer = type(setting.default) is int
    for value in (setting.low, setting.high, setting.high * 2 + 1, setting.low - 1):
        value = int(value) if integer else float(value)
        try:
            check_adaptation({name: value})
            checked = True
        except (TypeError, ValueError):
            checked = False
        try:
            _adaptation(**{name: value})
            runs = True
        except (TypeError, ValueError):
            runs = False
        assert checked == runs, (name, value)
        path = _config(tmp_path, extra="")
        path.write_text(path.read_text() + f"[runtime.adaptation]\n{name} = {value}\n")
        if checked:
            read_config(path)
        else:
            with pytest.raises(ValueError, match=f"adaptation setting {name}"):
                read_config(path)
