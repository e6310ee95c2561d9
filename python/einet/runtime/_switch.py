"""Python's thread switch interval, lowered while any threaded runtime that asks for it is open.

The interval is process-wide (``sys.setswitchinterval``): how long a thread may hold the GIL while
another waits. With Python's 5 ms default, a caller waiting for its deadline (or a worker waking to
hand an answer back) may wait that long while the other thread runs Python, so a threaded runtime lowers
it to ``SWITCH_INTERVAL`` while it is open, unless made with ``lower_switch_interval=False`` (an inline
runtime has no second thread and leaves it alone). It is scoped: counted across the runtimes open, given back
when the last one closes (or is collected), and left alone if someone else has set it meanwhile."""

from __future__ import annotations

import sys
import threading

SWITCH_INTERVAL = 1e-4  # seconds a thread may hold the GIL while another waits

_switch_lock = threading.RLock()  # re-entrant: a finaliser may run inside the holder's thread
_switch_users = 0  # runtimes open
_switch_saved: float | None = None  # the interval before the first of them lowered it
_switch_set: float | None = None  # what it was lowered to


def lower_switch_interval() -> None:
    """One more runtime holds the interval lowered (the first one lowers it); pair with a restore."""
    global _switch_users, _switch_saved, _switch_set
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL))
            _switch_set = sys.getswitchinterval()
        _switch_users += 1


def restore_switch_interval() -> None:
    """One runtime fewer holds it; the last one gives back the interval it found."""
    global _switch_users, _switch_saved, _switch_set
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0:
            if _switch_saved is not None and sys.getswitchinterval() == _switch_set:
                sys.setswitchinterval(_switch_saved)
            _switch_saved = _switch_set = None
