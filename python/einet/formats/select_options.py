"""The options a bundle's new devices are selected with (the manifest's ``select``, ``einet profile
BUNDLE``): one table of checks, which ``einet build``'s config (:mod:`einet.build_config`) checks its
``[select]`` section with too, so a value that passes one passes both. Part of the bundle format: an
option added, removed or narrowed here is a format change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..distributions import RELATIVE_KINDS
from ..errors import EinetValueError
from ..policies.kinds import DEPLOYABLE_KINDS
from ..rules import RULES
from ..signals import SIGNALS
from ..validation import number

Check = Callable[[Any], bool]


def one_of(*choices: Any) -> Check:
    return lambda v: v in choices


def list_of(check: Check, empty: bool = False) -> Check:
    return lambda v: isinstance(v, list) and (empty or bool(v)) and all(check(item) for item in v)


def number_in(low: float, high: float, integer: bool = False, low_open: bool = False) -> Check:
    def check(value: Any) -> bool:
        try:
            number("", value, low, high, integer=integer, low_open=low_open)
        except (TypeError, ValueError):
            return False
        return True

    return check


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def flag(value: Any) -> bool:
    return type(value) is bool


COUNT, SEED = number_in(1, 1_000_000, integer=True), number_in(0, 2**32 - 1, integer=True)
SELECT_OPTIONS: dict[str, tuple[Check, str]] = {  # option: (check, what it must be)
    "score_under": (list_of(one_of(*RELATIVE_KINDS)), "a list of " + ", ".join(RELATIVE_KINDS)),
    "rules": (list_of(one_of(*RULES)), "a list of " + ", ".join(RULES)),
    "time_zero": (list_of(flag), "a list of true/false"),
    "signals": (list_of(one_of(*SIGNALS)), "a list of " + ", ".join(SIGNALS)),
    "policies": (optional(list_of(one_of(*DEPLOYABLE_KINDS))), "a list of deployable policy kinds"),
    "predictor_epochs": (COUNT, "an integer >= 1"),
    "seed": (SEED, "an integer in [0, 2^32)"),
    "planning_us": (optional(number_in(0, 1e6)), "microseconds >= 0"),
}


def check_select_options(options: object) -> dict[str, Any]:
    """A manifest's select options: every one of the table given, each passing its check."""
    if not isinstance(options, dict) or set(options) != set(SELECT_OPTIONS):
        raise EinetValueError(f"select must give {', '.join(sorted(SELECT_OPTIONS))}")
    for name, value in options.items():
        check, what = SELECT_OPTIONS[name]
        if not check(value):
            raise EinetValueError(f"select {name} must be {what}, got {value!r:.80}")
    return options
