"""An interrupt as the runtime waits on it: a deadline, a ``threading.Event`` or a callable."""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable
from typing import Union

from ..errors import EinetTypeError, EinetValueError

Interrupt = Union[float, threading.Event, Callable[[], bool], None]

POLL_SECONDS = 1e-4  # how often an Event or callable interrupt is asked
# A deadline is slept towards until this long before it, then polled every POLL_SECONDS: on a busy
# CPU a thread that has slept through a long timeout wakes later than one that keeps waking up
# (a p99 of ~4 ms against ~2 ms past the deadline, measured on 2 loaded cores).
FINAL_POLL_SECONDS = 2e-3


class InterruptCheck:
    """An interrupt (deadline in seconds from the call, ``threading.Event``, callable or None),
    checked when made, as one waiting function: :meth:`wait`."""

    def __init__(self, interrupt: Interrupt, started: float) -> None:
        self.deadline: float | None = None  # seconds from the call; None: no deadline
        self._at = math.inf  # the deadline on the perf_counter clock
        self._check: Callable[[], bool] | None = None  # an Event's is_set, or the callable
        if interrupt is None:
            pass
        elif isinstance(interrupt, bool):  # a Real too, but surely a mistake
            raise EinetTypeError("interrupt must be seconds, a threading.Event or a callable, got a bool")
        elif type(interrupt) is float or isinstance(interrupt, numbers.Real):  # int, numpy scalars, Fraction, ...
            # (a float first: an ABC's isinstance costs microseconds, on every infer() call)
            try:
                seconds = float(interrupt)
            except OverflowError:  # an int too large for a float
                seconds = math.inf if interrupt > 0 else -math.inf
            if math.isnan(seconds):
                raise EinetValueError("the deadline is NaN: give seconds >= 0 (inf for none)")
            if seconds < 0:
                raise EinetValueError(f"the deadline is negative ({seconds} s): give seconds >= 0 (inf for none)")
            if seconds < threading.TIMEOUT_MAX:  # inf and beyond any timeout a thread can wait: none
                self.deadline = seconds
                self._at = started + seconds
        elif isinstance(interrupt, threading.Event):
            # Polled, like a callable: waiting on the Event itself, and so on its lock, which the
            # setting thread needs too, returned later on a loaded CPU (p90 ~3.6 ms against ~1.1 ms).
            self._check = interrupt.is_set
        elif callable(interrupt):
            self._check = interrupt
        else:
            raise EinetTypeError(f"interrupt must be seconds, a threading.Event or a callable, "
                                 f"got {type(interrupt).__name__}")

    def wait(self, block: Callable[[float | None], bool]) -> bool:
        """Wait with `block(timeout)` (None: no limit; True once what it waits for has happened)
        until it succeeds (True) or the interrupt fires first (False)."""
        if self._check is not None:
            if self._check():  # fired before the wait began: what is waited for does not count
                return False
            while not block(POLL_SECONDS):
                if self._check():
                    return False
            return True
        if self.deadline is None:
            return block(None)
        while True:
            left = self._at - time.perf_counter()
            if left <= 0.0:
                return block(0.0)  # what ended by the deadline wins
            if block(left - FINAL_POLL_SECONDS if left > FINAL_POLL_SECONDS else min(left, POLL_SECONDS)):
                return True

    @property
    def at(self) -> float:
        """The deadline on the perf_counter clock (inf: none)."""
        return self._at

    @property
    def poll(self) -> Callable[[], bool] | None:
        """What to ask whether an Event or callable interrupt has fired (None for a deadline or none)."""
        return self._check

    def fired(self, ended: float) -> bool:
        """Whether the interrupt fired before an inference that ended `ended` seconds after the call:
        exact for a deadline; for an Event or callable, whether it has fired by the time the end is
        seen (on a busy CPU that can be a while later: a late caller reports the interruption)."""
        if self.deadline is not None:
            return ended > self.deadline
        return self._check is not None and bool(self._check())

    def cutoff(self, elapsed: float) -> float:
        """When interrupted `elapsed` seconds after the call: the last moment whose answers count
        (an answer finished after the deadline does not)."""
        return elapsed if self.deadline is None else min(elapsed, self.deadline)
