"""The adaptive runtime's settings: one table of names, defaults and bounds.

A build config (``[runtime.adaptation]``), a bundle's manifest and
:class:`einet.runtime.adaptive.Adaptation` all check a setting against this table, so a value that
passes one passes all three: a bundle that verifies always loads. Part of the bundle format: a
setting added, removed or narrowed here is a format change. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

from ..errors import EinetTypeError, EinetValueError
from ..validation import number

Value = Union[bool, int, float]


@dataclass(frozen=True)
class Setting:
    """One setting: its default (its type: bool, int or float) and, for numbers, its bounds."""

    default: Value
    low: float = 0.0
    high: float = 1e9
    low_open: bool = False

    def check(self, name: str, value: object) -> Value:
        """`value` of this setting's type and within its bounds; TypeError/ValueError naming it otherwise."""
        if isinstance(self.default, bool):
            if type(value) is not bool:
                raise EinetTypeError(f"adaptation setting {name} must be true or false, got {value!r:.40}")
            return value
        checked: Value = number(f"adaptation setting {name}", value, self.low, self.high,
                                integer=isinstance(self.default, int), low_open=self.low_open)
        return checked


SETTINGS: dict[str, Setting] = {
    "block_rate": Setting(0.01, 0.0, 0.5),  # weight of a new block time in its running estimate
    "device_rate": Setting(0.05, 0.0, 0.5),  # the same for the device-wide slowdown
    "window": Setting(500, 1, 1_000_000),  # recent samples the exit-time estimate keeps
    "weight": Setting(50.0),  # samples' worth of weight the prior exit-time distribution keeps
    "every": Setting(10, 1, 1_000_000),  # samples learnt from per batch
    "gap": Setting(50, 0, 1_000_000),  # samples between two plans at least
    "tolerance": Setting(0.1),  # relative change of the full inference time that asks for a plan
    "distance": Setting(0.05, 0.0, 1.0),  # Kolmogorov-Smirnov change of the exit times that asks for a plan
    "step": Setting(0.1, 0.0, 10.0, low_open=True),  # rounding of block times between cached plans
    "cache": Setting(32, 1, 100_000),  # plans kept
    "learn_blocks": Setting(True),
    "learn_exits": Setting(True),
    "background": Setting(False),
}


def check_adaptation(settings: object) -> dict[str, Value]:
    """Adaptation settings (a table: each known, of its type, within its bounds), checked; every one
    given returned, as checked. TypeError/ValueError naming the setting otherwise."""
    if not isinstance(settings, Mapping):
        raise EinetTypeError(f"runtime adaptation must be a table of settings, got {settings!r:.80}")
    checked: dict[str, Value] = {}
    for name, value in settings.items():
        if name not in SETTINGS:
            raise EinetValueError(f"unknown adaptation setting {name!r}: expected one of {', '.join(SETTINGS)}")
        checked[name] = SETTINGS[name].check(name, value)
    return checked

