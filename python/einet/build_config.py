"""A build's config (TOML): every section and option of ``einet build``, its default, its type and bounds.

Paths in a config are relative to its own folder. Unknown sections or options, and values of the
wrong type or out of bounds, are refused before any work, naming the option (examples/*.toml).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributions import RELATIVE_KINDS
from .errors import EinetValueError
from .rules import RULES
from .validation import plain_json, printable_name

SECTIONS: dict[str, dict[str, Any]] = {  # every option and its default (None: required or absent)
    "data": {"dataset": "cifar10", "path": None, "holdout": 0.1, "seed": 0},
    "network": {"zoo": None, "width": 1.0, "exit_head": "paper", "constructor": None, "kwargs": {}, "exits": None,
                "checkpoint": None, "backbone_weights": None},
    "train": {"epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "schedule": "onecycle",
              "recipe": "joint", "exit_weights": None, "threads": 2},
    "levers": {"refit_exits": False, "refit_pool": 8, "refit_epochs": 16, "thumbnail": False, "thumbnail_size": 8,
               "second_look": [], "second_look_view": "flip"},
    "profile": {"repeats": 400, "warmup": 20, "et": None, "compile": False},
    "select": {"dist": "normal", "score_under": ["uniform", "normal"], "horizon_ms": None,
               "rules": list(RULES), "time_zero": [False, True], "signals": ["confidence"],
               "policies": None, "predictor_epochs": 40, "seed": 0, "planning_us": None},
    "runtime": {"adapt": True, "threads": 1, "adaptation": {}},
    "output": {"bundle": None, "work": None, "keep_test_profile": True},
}
TOP_LEVEL = {"name"}


def _one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _list_of(check: Callable[[Any], bool], empty: bool = False) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and (empty or bool(v)) and all(check(item) for item in v)


def _number(low: float, high: float, integer: bool = False, low_open: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        from .validation import number

        try:
            number("", value, low, high, integer=integer, low_open=low_open)
        except (TypeError, ValueError):
            return False
        return True

    return check


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 4096


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _flag(value: Any) -> bool:
    return type(value) is bool


_COUNT, _SEED = _number(1, 1_000_000, integer=True), _number(0, 2**32 - 1, integer=True)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {  # "section.option": (check, what it must be)
    "data.dataset": (_one_of("mnist", "fashion-mnist", "cifar10", "cifar100", "folder"),
                     "mnist, fashion-mnist, cifar10, cifar100 or folder"),
    "data.path": (_text, "a path"), "data.holdout": (_number(0, 0.99, low_open=True), "a fraction in (0, 0.99]"),
    "data.seed": (_SEED, "an integer in [0, 2^32)"),
    "network.zoo": (_optional(_text), "a zoo name"), "network.width": (_number(0, 16, low_open=True), "in (0, 16]"),
    "network.exit_head": (_one_of("paper", "light"), "paper or light"),
    "network.constructor": (_optional(_text), "package.module:callable"),
    "network.kwargs": (lambda v: isinstance(v, dict) and plain_json(v), "a table of plain values (at most 1000, "
                       "nested at most 16 deep)"),
    "network.exits": (_optional(_list_of(_text)), "a list of module names"),
    "network.checkpoint": (_optional(_text), "a path"), "network.backbone_weights": (_optional(_text), "a path"),
    "train.epochs": (_COUNT, "an integer >= 1"), "train.batch_size": (_number(1, 65_536, integer=True), "1..65536"),
    "train.optimizer": (_one_of("sgd", "adam"), "sgd or adam"),
    "train.lr": (_number(0, 100, low_open=True), "(0, 100]"),
    "train.schedule": (_one_of("onecycle", "cosine", "step", "constant"), "onecycle, cosine, step or constant"),
    "train.recipe": (_one_of("joint", "distill", "distill-ensemble"), "joint, distill or distill-ensemble"),
    "train.exit_weights": (_optional(_list_of(_number(0, 1e6))), "a list of weights >= 0"),
    "train.threads": (_number(1, 1024, integer=True), "1..1024"),
    "levers.refit_exits": (_flag, "true or false"), "levers.refit_pool": (_number(1, 64, integer=True), "1..64"),
    "levers.refit_epochs": (_COUNT, "an integer >= 1"), "levers.thumbnail": (_flag, "true or false"),
    "levers.thumbnail_size": (_number(1, 64, integer=True), "1..64"),
    "levers.second_look": (_list_of(_number(1, 100_000, integer=True), empty=True),
                           "a list of depths (blocks per pass)"),
    "levers.second_look_view": (_one_of("flip"), "flip"),
    "profile.repeats": (_COUNT, "an integer >= 1"), "profile.warmup": (_number(0, 1_000_000, integer=True), ">= 0"),
    "profile.et": (_optional(_text), "a path"), "profile.compile": (_flag, "true or false"),
    "select.dist": (_one_of(*RELATIVE_KINDS), " or ".join(RELATIVE_KINDS)),
    "select.score_under": (_list_of(_one_of(*RELATIVE_KINDS)), "a list of " + ", ".join(RELATIVE_KINDS)),
    "select.horizon_ms": (_optional(_number(0, 1e9, low_open=True)), "milliseconds > 0"),
    "select.rules": (_list_of(_one_of(*RULES)), "a list of " + ", ".join(RULES)),
    "select.time_zero": (_list_of(_flag), "a list of true/false"),
    "select.signals": (_list_of(_one_of("confidence", "entropy", "margin", "agreement")),
                       "a list of confidence, entropy, margin, agreement"),
    "select.policies": (_optional(_list_of(_one_of("einet", "einet-paper", "static", "dynamic", "statistics",
                                                     "single-exit"))), "a list of deployable policy kinds"),
    "select.predictor_epochs": (_COUNT, "an integer >= 1"), "select.seed": (_SEED, "an integer in [0, 2^32)"),
    "select.planning_us": (_optional(_number(0, 1e6)), "microseconds >= 0"),
    "runtime.adapt": (_flag, "true or false"), "runtime.threads": (_number(1, 1024, integer=True), "1..1024"),
    "runtime.adaptation": (lambda v: True, "a table"),  # checked against einet.runtime.adaptive.Adaptation below
    "output.bundle": (_text, "a path"), "output.work": (_optional(_text), "a path"),
    "output.keep_test_profile": (_flag, "true or false"),
}


@dataclass(frozen=True)
class BuildConfig:
    """A build's settings: each section of :data:`SECTIONS`, defaults filled in, paths resolved."""

    name: str
    sections: dict[str, dict[str, Any]]
    folder: Path  # the config's folder: relative paths start there
    source: dict[str, Any] = field(default_factory=dict)  # as written, for the bundle's provenance
    file: Path | None = None  # the config file itself

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

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
        from .models.zoo import ZOO  # (torch: a build needs it anyway)

        if network["zoo"] not in ZOO:
            raise EinetValueError(f"{path}: network.zoo {network['zoo']!r} is not a zoo network: expected one of "
                                  f"{', '.join(ZOO)}")


def read_config(path: str | os.PathLike[str], constructor: str | None = None) -> BuildConfig:
    """A build config from TOML: unknown sections and options refused, required ones checked, before any work.

    A config that names a constructor (``network.constructor``: importing it runs its code) is read only
    when the caller names the same `constructor`: a config is data, shared between people, and runs no
    code that its reader did not name (as a checkpoint of a converted network)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    from .validation import open_regular

    path = Path(path)
    try:
        with open_regular(path) as f:
            source = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise EinetValueError(f"{path} is not valid TOML: {type(error).__name__}: {str(error)[:200]}") from None
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
        sections[name] = defaults | given
        for option, value in given.items():
            check, what = CHECKS[f"{name}.{option}"]
            if not check(value):
                raise EinetValueError(f"{path}: {name}.{option} must be {what}, got {value!r:.80}")
    if sections["data"]["path"] is None:
        raise EinetValueError(f"{path}: data.path is required (the dataset's folder or file)")
    _check_network(path, sections["network"], source.get("network", {}), constructor)
    if sections["output"]["bundle"] is None:
        raise EinetValueError(f"{path}: output.bundle is required (the bundle folder to write)")
    select = sections["select"]
    # scored under each of these, averaged; deployed for the first (einet.evaluation.select.select_network)
    select["score_under"] = [select["dist"], *[kind for kind in select["score_under"] if kind != select["dist"]]]
    from .formats.adaptation import check_adaptation

    try:
        check_adaptation(sections["runtime"]["adaptation"])
    except (TypeError, ValueError) as error:
        raise EinetValueError(f"{path}: runtime: {error}") from None
    name = source.get("name", path.stem)
    if not printable_name(name):
        raise EinetValueError(f"{path}: name must be a printable string of at most 200 characters, got {name!r:.80}")
    if sections["output"]["work"] is None:
        sections["output"]["work"] = f"{sections['output']['bundle']}.work"
    return BuildConfig(name, sections, path.resolve().parent, source, path.resolve())
