"""The fuzzers' worker processes: each runs a range of cases and reports them line by line on its
stdout; a worker that dies is retired and its range resumed after the case it died in, one silent
inside a case for too long is killed as hung."""

from __future__ import annotations

import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence


class Worker:
    """One worker subprocess (`argv`) running cases start..stop-1, read line by line from its stdout."""

    def __init__(self, argv: Sequence[str], start: int, stop: int, env: Mapping[str, str] | None = None,
                 kind: str = "") -> None:
        self.kind, self.stop = kind, stop  # what it fuzzes (a fuzzer's own label)
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=self.stderr,
                                        env=None if env is None else dict(env))
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        self.buffer = b""
        self.current: object | None = None  # the case (or call) begun and not finished
        self.done_through = start - 1
        self.last_output = time.monotonic()

    def lines(self) -> list[str] | None:
        """The complete lines available now; None at end of output."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        return [line.decode(errors="replace") for line in complete]

    def close(self, tail: int = 3000) -> str:
        """Waits for the process (killed if still running); returns the tail of its stderr."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.stderr.seek(0)
        text = self.stderr.read()[-tail:].decode(errors="replace")
        self.stderr.close()
        return text


def serve(workers: int, start: Callable[[], Worker | None], going: Callable[[bool], bool],
          handle: Callable[[Worker, str], None], retire: Callable[[Worker, str, bool], None],
          hang: float, stalled: float) -> None:
    """Keeps up to `workers` running (`start` gives the next, None when there is none) while
    `going(any_running)`; feeds every line to `handle`; a worker that ends, or is silent inside a case
    for `hang` seconds (killed), goes to `retire(worker, stderr_tail, hung)`. A worker silent outside
    any case for `stalled` seconds is the fuzzer's own bug: RuntimeError. Workers still running at
    the end are killed and not reported."""
    running: list[Worker] = []
    selector = selectors.DefaultSelector()

    def end(w: Worker, hung: bool) -> None:
        selector.unregister(w.fd)
        running.remove(w)
        retire(w, w.close(), hung)

    try:
        while going(bool(running)):
            while len(running) < workers and (w := start()) is not None:
                running.append(w)
                selector.register(w.fd, selectors.EVENT_READ, w)
            for key, _ in selector.select(timeout=1.0):
                w = key.data
                lines = w.lines()
                if lines is None:
                    end(w, hung=False)
                    continue
                w.last_output = time.monotonic()
                for line in lines:
                    handle(w, line)
            now = time.monotonic()
            for w in list(running):
                if w.current is not None and now - w.last_output > hang:
                    end(w, hung=True)
                elif now - w.last_output > stalled:
                    raise RuntimeError(f"a worker stalled outside a case after case {w.done_through}")
    finally:  # (also after an error here or in a callback: no worker is left running)
        for w in running:
            selector.unregister(w.fd)
            w.close()
        selector.close()
