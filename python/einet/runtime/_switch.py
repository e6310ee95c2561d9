"""Python's thread switch interval, lowered while any runtime is open."""

from __future__ import annotations

import sys
import threading

SWITCH_INTERVAL = 1e-4  # seconds a thread may hold the GIL while another waits

# Python's default 5 ms. It is process-wide, so it is lowered while any runtime is open and given back
# when the last one closes (unless someone else has set it meanwhile), counted under a lock.
_switch_lock = threading.RLock()  # re-entrant: a finaliser may run inside the holder's thread
_switch_users = 0  # runtimes open
_switch_saved: float | None = None  # the interval before the first of them lowered it
_switch_set: float | None = None  # what it was lowered to


def lower_switch_interval() -> None:
    global _switch_users, _switch_saved, _switch_set
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL))
            _switch_set = sys.getswitchinterval()
        _switch_users += 1


def restore_switch_interval() -> None:
    global _switch_users, _switch_saved, _switch_set
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0:
            if _switch_saved is not None and sys.getswitchinterval() == _switch_set:
                sys.setswitchinterval(_switch_saved)
            _switch_saved = _switch_set = None
