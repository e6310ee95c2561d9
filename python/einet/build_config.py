"""A build's config (TOML): every section and option of ``einet build``, its default, its type and bounds.

Each section is a frozen dataclass whose fields are the one table of options: a field's annotation is
its type, its default the option's, its metadata the check and what the option must be
(:data:`SECTIONS` and :data:`CHECKS` are views of it). Choices are the names the owning module defines
(datasets: :mod:`einet.data`; optimizers, schedules, recipes: :mod:`einet.training`; exit heads, views:
:mod:`einet.models`); the [select] options a bundle keeps are checked by the bundle format's own table
(:mod:`einet.formats.select_options`). Paths in a config are relative to its own folder. Unknown
sections or options, and values of the wrong type or out of bounds, are refused before any work,
naming the option (examples/*.toml).
"""

# ruff: noqa: RUF009  (each option's default is a dataclasses.field, made by _option)
from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from .choices import EXIT_HEADS, OPTIMIZERS, RECIPES, SCHEDULES
from .data import DATASETS
from .distributions import RELATIVE_KINDS
from .errors import EinetValueError
from .formats.select_options import COUNT, SEED, SELECT_OPTIONS, flag, list_of, number_in, one_of, optional
from .models.second_look import VIEWS
from .rules import RULES
from .validation import plain_json, printable_name


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 4096


def _option(default: Any, check: Callable[[Any], bool], what: str, reads_file: bool = False) -> Any:
    """An option: its default, its check and what it must be; `reads_file`: a path whose file a stage reads
    (a stage's key covers the file's SHA-256, not its name)."""
    metadata = {"check": check, "what": what, "reads_file": reads_file}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _choice(default: str, names: Sequence[str]) -> Any:
    return _option(default, one_of(*names), names[0] if len(names) == 1 else
                   f"{', '.join(names[:-1])} or {names[-1]}")


def _selected_with(default: Any, name: str) -> Any:
    """A [select] option a bundle's new devices are selected with too: checked as the bundle format's."""
    return _option(default, *SELECT_OPTIONS[name])


_COUNT, _SEED = (COUNT, "an integer >= 1"), (SEED, "an integer in [0, 2^32)")
_FLAG, _PATH, _THREADS = (flag, "true or false"), (_text, "a path"), (number_in(1, 1024, integer=True), "1..1024")


@dataclass(frozen=True)
class DataOptions:
    """[data]: the dataset and its held-out split (``path`` is required)."""

    dataset: str = _choice("cifar10", DATASETS)
    path: str = _option(None, *_PATH)
    holdout: float = _option(0.1, number_in(0, 0.99, low_open=True), "a fraction in (0, 0.99]")
    seed: int = _option(0, *_SEED)


@dataclass(frozen=True)
class NetworkOptions:
    """[network]: a zoo network or the user's constructor (exactly one), or a checkpoint to start from."""

    zoo: str | None = _option(None, optional(_text), "a zoo name")
    width: float = _option(1.0, number_in(0, 16, low_open=True), "in (0, 16]")
    exit_head: str = _choice("paper", EXIT_HEADS)
    constructor: str | None = _option(None, optional(_text), "package.module:callable")
    kwargs: dict[str, Any] = _option({}, lambda v: isinstance(v, dict) and plain_json(v),
                                     "a table of plain values (at most 1000, nested at most 16 deep)")
    exits: list[str] | None = _option(None, optional(list_of(_text)), "a list of module names")
    checkpoint: str | None = _option(None, optional(_text), "a path", reads_file=True)
    backbone_weights: str | None = _option(None, optional(_text), "a path", reads_file=True)


@dataclass(frozen=True)
class TrainOptions:
    """[train]: how the network is trained (einet.training.TrainConfig)."""

    epochs: int = _option(10, *_COUNT)
    batch_size: int = _option(128, number_in(1, 65_536, integer=True), "1..65536")
    optimizer: str = _choice("sgd", OPTIMIZERS)
    lr: float = _option(0.05, number_in(0, 100, low_open=True), "(0, 100]")
    schedule: str = _choice("onecycle", SCHEDULES)
    recipe: str = _choice("joint", RECIPES)
    exit_weights: list[float] | None = _option(None, optional(list_of(number_in(0, 1e6))), "a list of weights >= 0")
    threads: int = _option(2, *_THREADS)


@dataclass(frozen=True)
class LeverOptions:
    """[levers]: the light exits refitted, a thumbnail exit, second-look depths."""

    refit_exits: bool = _option(False, *_FLAG)
    refit_pool: int = _option(8, number_in(1, 64, integer=True), "1..64")
    refit_epochs: int = _option(16, *_COUNT)
    thumbnail: bool = _option(False, *_FLAG)
    thumbnail_size: int = _option(8, number_in(1, 64, integer=True), "1..64")
    second_look: list[int] = _option([], list_of(number_in(1, 100_000, integer=True), empty=True),
                                     "a list of depths (blocks per pass)")
    second_look_view: str = _choice("flip", VIEWS)


@dataclass(frozen=True)
class ProfileOptions:
    """[profile]: how the network is timed here (or an ET-profile timed before), and compiled."""

    repeats: int = _option(400, *_COUNT)
    warmup: int = _option(20, number_in(0, 1_000_000, integer=True), ">= 0")
    et: str | None = _option(None, optional(_text), "a path", reads_file=True)
    compile: bool = _option(False, *_FLAG)


@dataclass(frozen=True)
class SelectOptions:
    """[select]: the candidates' selection on held-out data (einet.evaluation.select.select_network)."""

    dist: str = _choice("normal", tuple(RELATIVE_KINDS))
    score_under: list[str] = _selected_with(["uniform", "normal"], "score_under")
    horizon_ms: float | None = _option(None, optional(number_in(0, 1e9, low_open=True)), "milliseconds > 0")
    rules: list[str] = _selected_with(list(RULES), "rules")
    time_zero: list[bool] = _selected_with([False, True], "time_zero")
    signals: list[str] = _selected_with(["confidence"], "signals")
    policies: list[str] | None = _selected_with(None, "policies")
    predictor_epochs: int = _selected_with(40, "predictor_epochs")
    seed: int = _selected_with(0, "seed")
    planning_us: float | None = _selected_with(None, "planning_us")


@dataclass(frozen=True)
class RuntimeOptions:
    """[runtime]: how the bundle runs (threads, adaptation)."""

    adapt: bool = _option(True, *_FLAG)
    threads: int = _option(1, *_THREADS)
    # (checked against einet.runtime.adaptive.Adaptation by read_config)
    adaptation: dict[str, Any] = _option({}, lambda v: True, "a table")


@dataclass(frozen=True)
class OutputOptions:
    """[output]: the bundle (required) and the work folder (default: the bundle's path + .work)."""

    bundle: str = _option(None, *_PATH)
    work: str = _option(None, optional(_text), "a path")
    keep_test_profile: bool = _option(True, *_FLAG)


SECTION_TYPES: dict[str, type] = {"data": DataOptions, "network": NetworkOptions, "train": TrainOptions,
                                  "levers": LeverOptions, "profile": ProfileOptions, "select": SelectOptions,
                                  "runtime": RuntimeOptions, "output": OutputOptions}
TOP_LEVEL = {"name"}


def _default(option: Field[Any]) -> Any:
    factory = option.default_factory
    return factory() if callable(factory) else option.default


OPTIONS: dict[str, Field[Any]] = {f"{section}.{option.name}": option for section, kind in SECTION_TYPES.items()
                                  for option in fields(kind)}
SECTIONS: dict[str, dict[str, Any]] = {section: {option.name: _default(option) for option in fields(kind)}
                                       for section, kind in SECTION_TYPES.items()}  # every option's default
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {  # "section.option": (check, what it must be)
    name: (option.metadata["check"], option.metadata["what"]) for name, option in OPTIONS.items()}


@dataclass(frozen=True)
class BuildConfig:
    """A build's settings: each section typed, defaults filled in; paths as written (:meth:`path` resolves)."""

    name: str
    data: DataOptions
    network: NetworkOptions
    train: TrainOptions
    levers: LeverOptions
    profile: ProfileOptions
    select: SelectOptions
    runtime: RuntimeOptions
    output: OutputOptions
    folder: Path  # the config's folder: relative paths start there
    source: dict[str, Any] = field(default_factory=dict)  # as written, for the bundle's provenance
    file: Path | None = None  # the config file itself

    def option(self, name: str) -> Any:
        """The value of option `name` ("section.option")."""
        section, option = name.split(".")
        return getattr(getattr(self, section), option)

    def path(self, value: str | None) -> Path | None:
        return None if value is None else (self.folder / value)


# What only one kind of network uses: given with the other kind, an option would be ignored.
_CONSTRUCTOR_ONLY, _ZOO_ONLY = ("kwargs", "exits", "backbone_weights"), ("width", "exit_head")


def _check_network(path: Path, network: dict[str, Any], given: dict[str, Any], trusted: str | None) -> None:
    """One kind of network (a zoo name, or a constructor the caller trusts), and only the options it uses."""
    if (network["zoo"] is None) == (network["constructor"] is None):
        raise EinetValueError(f"{path}: give exactly one of network.zoo and network.constructor")
    named = network["constructor"]
    unused = [option for option in (_ZOO_ONLY if named else _CONSTRUCTOR_ONLY) if option in given]
    if unused:
        raise EinetValueError(f"{path}: network.{unused[0]} goes with network.{'zoo' if named else 'constructor'}, "
                              f"not with network.{'constructor' if named else 'zoo'}: it would be ignored")
    if named is not None and named != trusted:
        raise EinetValueError(f"{path}: network.constructor {named!r} imports and runs code: build it only if "
                              "you trust "
                              f"it, by naming it again on the command line (--constructor {named})")
    if named is not None:  # trusted: imported now, so that what cannot make a network is refused before any work
        from .models.constructor import resolve_constructor

        try:
            resolve_constructor(named)
        except ValueError as error:
            raise EinetValueError(f"{path}: network.constructor: {error}") from None
    else:
        from .models.zoo import ZOO

        if network["zoo"] not in ZOO:
            raise EinetValueError(f"{path}: network.zoo {network['zoo']!r} is not a zoo network: expected one of "
                                  f"{', '.join(ZOO)}")


def _checked_sections(path: Path, source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each section's values, defaults filled in: unknown sections and options, and bad values, refused."""
    unknown = sorted(set(source) - set(SECTIONS) - TOP_LEVEL)
    if unknown:
        raise EinetValueError(f"{path}: unknown section {unknown[0]!r}: expected {', '.join(SECTIONS)}")
    sections: dict[str, dict[str, Any]] = {}
    for name, defaults in SECTIONS.items():
        given = source.get(name, {})
        if not isinstance(given, dict):
            raise EinetValueError(f"{path}: [{name}] must be a table")
        extra = sorted(set(given) - set(defaults))
        if extra:
            raise EinetValueError(f"{path}: unknown option {name}.{extra[0]}: expected one of {', '.join(defaults)}")
        sections[name] = copy.deepcopy(defaults) | given
        for option, value in given.items():
            check, what = CHECKS[f"{name}.{option}"]
            if not check(value):
                raise EinetValueError(f"{path}: {name}.{option} must be {what}, got {value!r:.80}")
    return sections


def read_config(path: str | os.PathLike[str], constructor: str | None = None) -> BuildConfig:
    """A build config from TOML: unknown sections and options refused, required ones checked, before any work.

    A config that names a constructor (``network.constructor``: importing it runs its code) is read only
    when the caller names the same `constructor`: a config is data, shared between people, and runs no
    code that its reader did not name (as a checkpoint of a converted network)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from .formats.adaptation import check_adaptation
    from .validation import open_regular

    path = Path(path)
    try:
        with open_regular(path) as f:
            source = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise EinetValueError(f"{path} is not valid TOML: {type(error).__name__}: {str(error)[:200]}") from None
    sections = _checked_sections(path, source)
    if sections["data"]["path"] is None:
        raise EinetValueError(f"{path}: data.path is required (the dataset's folder or file)")
    _check_network(path, sections["network"], source.get("network", {}), constructor)
    output, select = sections["output"], sections["select"]
    if output["bundle"] is None:
        raise EinetValueError(f"{path}: output.bundle is required (the bundle folder to write)")
    # scored under each of these, averaged; deployed for the first (einet.evaluation.select.select_network)
    select["score_under"] = [select["dist"], *[kind for kind in select["score_under"] if kind != select["dist"]]]
    try:
        check_adaptation(sections["runtime"]["adaptation"])
    except (TypeError, ValueError) as error:
        raise EinetValueError(f"{path}: runtime: {error}") from None
    name = source.get("name", path.stem)
    if not printable_name(name):
        raise EinetValueError(f"{path}: name must be a printable string of at most 200 characters, got {name!r:.80}")
    if output["work"] is None:
        output["work"] = f"{output['bundle']}.work"
    typed = {section: SECTION_TYPES[section](**values) for section, values in sections.items()}
    return BuildConfig(name, **typed, folder=path.resolve().parent, source=source, file=path.resolve())
