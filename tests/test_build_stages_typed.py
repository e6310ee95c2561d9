"""`einet build`'s stages as declared (einet.build_stages): a stage's key is derived from what it declares it
reads, so changing any declared input re-runs it and changing anything else does not; a stage cannot read
an option it does not declare; a build leaves torch's threads and random state as it found them.

The stages' work is replaced by a fake that records the call and writes its files: what is tested is the
bookkeeping, for every stage and every input it declares."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

import torch

from einet import pipeline
from einet.build_config import OPTIONS, SECTION_TYPES, BuildConfig, read_config
from einet.build_stages import StageWork, UndeclaredOptionError, declared_config
from tests.test_hostile_build import write_mnist

CONFIG = """name = "tiny"
[data]
dataset = "mnist"
path = "{data}"
holdout = 0.2
[network]
zoo = "b_alexnet"
width = 0.125
exit_head = "light"
[train]
threads = 1
[levers]
refit_exits = true
thumbnail = {thumbnail}
[output]
bundle = "out.einet"
"""
# Not varied where a stage does not declare them: where the data is read from and the bundle written to
# (covered by the data's facts and the work folder), and the levers that choose which stages there are.
WHERE = {"data.dataset", "data.path", "output.bundle", "output.work", "levers.refit_exits", "levers.thumbnail"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mnist") / "data"
    write_mnist(folder)
    return folder


class Fakes:
    """Every stage's run replaced: it records its name and writes its files (`salt`ed for the stage named)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ran: list[str] = []
        self.salted: str | None = None
        monkeypatch.setattr(pipeline, "STAGES", tuple(replace(stage, run=self._fake(stage.name))
                                                      for stage in pipeline.STAGES))
        monkeypatch.setattr(pipeline, "_write", lambda config, data, stages: stages.work.parent / "out.einet")
        monkeypatch.setattr(pipeline, "_compile", lambda config, bundle, log: None)

    def _fake(self, name: str) -> Any:
        def run(work: StageWork) -> None:
            self.ran.append(name)
            for path in work.writes:
                path.write_text(name + ("salted" if name == self.salted else ""))

        return run

    def build(self, config: BuildConfig) -> list[str]:
        self.ran = []
        pipeline.build(config, log=lambda line: None)
        return self.ran


def config_for(folder: Path, data: Path, stage: str) -> BuildConfig:
    """The tiny build's config, every stage on (the thumbnail exit except for the stage that makes none)."""
    path = folder / "config.toml"
    path.write_text(CONFIG.format(data=data, thumbnail="false" if stage == "final" else "true"))
    return read_config(path)


def changed(config: BuildConfig, name: str, value: Any) -> BuildConfig:
    section, option = name.split(".")
    return replace(config, **{section: replace(getattr(config, section), **{option: value})})


def other(config: BuildConfig, name: str) -> Any:
    """Another value for option `name` (a file option: another file)."""
    value = config.option(name)
    if OPTIONS[name].metadata["reads_file"]:
        (config.folder / "another-file").write_bytes(name.encode())
        return "another-file"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2  # (in the bounds of a fraction too)
    if isinstance(value, list):
        return [*value, *(value[:1] or [1])]
    if isinstance(value, dict):
        return value | {"another": 1}
    return "another" if value is None else value + "-another"


@pytest.mark.parametrize(("stage", "option"), [(stage.name, option) for stage in pipeline.STAGES
                                               for option in stage.options])
def test_changing_any_option_a_stage_declares_runs_it_again(tmp_path, data, monkeypatch, stage, option):
    fakes = Fakes(monkeypatch)
    config = config_for(tmp_path, data, stage)
    assert stage in fakes.build(config)
    assert fakes.build(config) == []
    assert stage in fakes.build(changed(config, option, other(config, option)))


@pytest.mark.parametrize(("stage", "fact"), [(stage.name, fact) for stage in pipeline.STAGES for fact in stage.facts])
def test_changing_any_fact_a_stage_declares_runs_it_again(tmp_path, data, monkeypatch, stage, fact):
    fakes = Fakes(monkeypatch)
    local = Path(tmp_path / "data")
    local.mkdir()
    for file in data.iterdir():
        (local / file.name).write_bytes(file.read_bytes())
    config = config_for(tmp_path, local, stage)
    fakes.build(config)
    if fact == "data":
        config = changed(config, "data.holdout", 0.3)
    elif fact == "test_data":
        labels = local / "t10k-labels-idx1-ubyte"
        raw = bytearray(labels.read_bytes())
        raw[8] = (raw[8] + 1) % 10
        labels.write_bytes(bytes(raw))
    else:
        config = replace(config, name="another")
    assert stage in fakes.build(config)


@pytest.mark.parametrize("stage", ["refit", "final", "thumbnail", "profile", "select"])
def test_another_result_of_a_stage_it_reads_runs_it_again(tmp_path, data, monkeypatch, stage):
    fakes = Fakes(monkeypatch)
    config = config_for(tmp_path, data, stage)
    fakes.build(config)
    upstream = next(s for s in pipeline.plan(config) if s.name == stage).after[0]
    fakes.salted = upstream  # made again (a file of it lost), with another result
    (config.path(config.output.work) / next(s for s in pipeline.STAGES if s.name == upstream).writes[0]).unlink()
    assert fakes.build(config)[:2] == [upstream, stage]


@pytest.mark.parametrize("stage", sorted({stage.name for stage in pipeline.STAGES}))
def test_changing_every_option_a_stage_does_not_declare_keeps_it(tmp_path, data, monkeypatch, stage):
    fakes = Fakes(monkeypatch)
    config = config_for(tmp_path, data, stage)
    declared = next(s for s in pipeline.STAGES if s.name == stage)
    fakes.build(config)
    undeclared = [name for name in OPTIONS if name not in declared.options and name not in WHERE
                  and not (name.startswith("data.") and "data" in declared.facts)]
    assert undeclared
    for name in undeclared:
        config = changed(config, name, other(config, name))
    assert stage not in fakes.build(config)


def test_a_stage_reads_only_the_options_it_declares(tmp_path, data):
    config = config_for(tmp_path, data, "refit")
    stage = next(s for s in pipeline.STAGES if s.name == "refit")
    seen = declared_config(config, stage)
    assert seen.levers.refit_pool == config.levers.refit_pool and seen.name == config.name
    with pytest.raises(UndeclaredOptionError, match=r"stage refit reads levers\.thumbnail_size"):
        _ = seen.levers.thumbnail_size


def test_every_declared_option_is_an_option():
    assert {option for stage in pipeline.STAGES for option in stage.options} <= set(OPTIONS)
    assert set(OPTIONS) == {f"{section}.{option.name}" for section, kind in SECTION_TYPES.items()
                            for option in fields(kind)}


def test_a_build_leaves_torch_threads_and_random_state_as_it_found_them(tmp_path, data, monkeypatch):
    fakes = Fakes(monkeypatch)
    config = changed(config_for(tmp_path, data, "network"), "train.threads", 3)
    inside: list[int] = []

    def seeds(work: StageWork) -> None:
        inside.append(torch.get_num_threads())
        torch.manual_seed(123)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "STAGES", tuple(replace(s, run=seeds) if s.name == "network" else s
                                                  for s in pipeline.STAGES))
    before_threads = torch.get_num_threads()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    with pytest.raises(KeyboardInterrupt):  # stopped midway: restored all the same
        fakes.build(config)
    assert inside == [3] and torch.get_num_threads() == before_threads
    assert torch.equal(torch.rand(3), expected)
