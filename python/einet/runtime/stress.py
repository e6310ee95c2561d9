"""A stress harness for elastic inference on a busy, changing device (design section 11).

- :class:`Burners`: background CPU burners, processes this harness starts and stops, steady or
  switched on and off every `period` seconds; each ends by itself after `limit` seconds or when its
  parent has gone (on Linux at once, even while stopped: with the thread that started it, so start
  burners from a thread that outlives them), so no burner outlives a crashed caller.
- :class:`Slowed`: a multi-exit network whose blocks and branches take `factor()` times as long
  (the extra time slept after each), a controlled stand-in for throttling or a shared core.
- :func:`switching_exit_times`: exit times drawn from one distribution, then from another after
  `at` samples: interrupts that change in the middle of a stream.

Used by ``benchmarks/test_bench_adaptive.py``, ``experiments/adaptive/adaptive_check.py`` and ``einet demo
--stress``. Burners pause and resume with SIGSTOP/SIGCONT, so switching them needs a POSIX system.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, cast

import numpy as np

from ..choices import LOADS
from ..errors import EinetValueError
from ..planner import Distribution
from ..validation import number

__all__ = ["LOADS", "Burners", "Slowed", "switching_exit_times"]

# A burner: busy until its time limit, or until its parent has gone. On Linux it is also killed with its
# parent (PR_SET_PDEATHSIG), which reaches it while stopped too: a stopped burner runs no timer. It says
# "ready" once that is armed, and is switched only after.
_BURN = """import os, sys, time
parent = int(sys.argv[2])
try:
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
sys.stdout.write("ready")  # armed: it may be stopped from now on
sys.stdout.flush()
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end and os.getppid() == parent:
    pass
"""


class Burners:
    """`count` busy processes while the ``with`` block runs: ``Burners(2)`` steady, ``Burners(2,
    period=1.5)`` on for 1.5 s, off for 1.5 s, and so on. ``Burners(0)`` does nothing (idle)."""

    def __init__(self, count: int = 2, period: float | None = None, limit: float = 3600.0) -> None:
        self.count = int(number("count", count, 0, 64, integer=True))
        self.period = None if period is None else number("period", period, 0.0, 3600.0, low_open=True)
        self.limit = number("limit", limit, 0.0, 86400.0, low_open=True)
        if self.period is not None and not hasattr(signal, "SIGSTOP"):
            raise EinetValueError("switching burners on and off needs SIGSTOP/SIGCONT (a POSIX system)")
        self._processes: list[subprocess.Popen[bytes]] = []
        self._done = threading.Event()
        self._switcher: threading.Thread | None = None
        self.switches = 0  # how often they were switched on or off

    @classmethod
    def for_load(cls, load: str, count: int = 2, period: float = 1.5, limit: float = 3600.0) -> Burners:
        """The burners of a named load: ``idle`` (none), ``steady``, ``switching`` (every `period` s)."""
        if load not in LOADS:
            raise EinetValueError(f"unknown load {load!r}: expected one of {', '.join(LOADS)}")
        return cls(0 if load == "idle" else count, period if load == "switching" else None, limit)

    def __enter__(self) -> Burners:
        self._processes = [subprocess.Popen([sys.executable, "-c", _BURN, str(self.limit), str(os.getpid())],
                                            stdout=subprocess.PIPE) for _ in range(self.count)]
        for process in self._processes:  # each burner busy, and dying with this process, before any switching
            ready = cast(IO[bytes], process.stdout)  # (one stopped before it armed that would outlive us)
            ready.read(5)
            ready.close()
        if self.period is not None and self._processes:
            self._switcher = threading.Thread(target=self._switch, daemon=True, name="einet-burners")
            self._switcher.start()
        return self

    def _switch(self) -> None:
        running = True
        period = float(self.period or 0.0)
        while not self._done.wait(period):
            running = not running
            for process in self._processes:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGCONT if running else signal.SIGSTOP)
            self.switches += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._done.set()
        if self._switcher is not None:
            self._switcher.join()
        for process in self._processes:
            if process.poll() is None:
                process.kill()  # SIGKILL ends a stopped process too
            process.wait()


class Slowed:
    """`model` with every block and branch taking `factor()` times as long: after each, the extra
    ``(factor() - 1) x`` its time is slept. `factor` is asked each time, so it may change while a
    stream runs (e.g. ``lambda: 2.0 if slow.is_set() else 1.0``)."""

    def __init__(self, model: Any, factor: Callable[[], float]) -> None:
        self.model, self.factor = model, factor
        self.num_exits = model.num_exits

    def _slowed(self, run: Callable[[Any, Any], Any], i: int, h: Any) -> Any:
        started = time.perf_counter()
        out = run(i, h)
        extra = (self.factor() - 1.0) * (time.perf_counter() - started)
        if extra > 0:
            time.sleep(extra)
        return out

    def forward_block(self, i: int, h: Any) -> Any:
        return self._slowed(self.model.forward_block, i, h)

    def forward_exit(self, i: int, h: Any) -> Any:
        return self._slowed(self.model.forward_exit, i, h)

    def to(self, *args: Any, **kwargs: Any) -> Slowed:
        self.model = self.model.to(*args, **kwargs)
        return self

    def eval(self) -> Slowed:
        self.model.eval()
        return self


def switching_exit_times(first: Distribution, second: Distribution, count: int, at: int,
                         rng: np.random.Generator) -> np.ndarray:
    """`count` exit times: the first `at` drawn from `first`, the rest from `second`."""
    from ..distributions import sample_exit_times

    if not 0 <= at <= count:
        raise EinetValueError(f"the switch must come within the stream: 0 <= at <= {count}, got {at}")
    return np.concatenate([sample_exit_times(first, (at,), rng), sample_exit_times(second, (count - at,), rng)])
