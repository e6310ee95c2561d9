"""How an inference is driven: in the caller's own thread, or on a worker thread that lets the caller
return at the interrupt instant. Every driver runs an engine (the Python :class:`._worker.BlockLoop`, or the
native loop: the blocks, the policy, the held answer) and keeps one contract, so
:class:`einet.runtime.ElasticRuntime` holds one driver and never asks which. The drivers: :class:`InlineDriver`
(either engine), :class:`ThreadedDriver` (the Python worker), and the native engine's own worker,
:class:`einet.runtime.native.NativeDriver`."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..errors import EinetValueError
from ..planner import ETProfile
from ._interrupt import InterruptCheck
from ._worker import BlockLoop, Job, Worker
from .adaptive import Adaptation

if TYPE_CHECKING:
    from .native import NativeEngine


class Engine(Protocol):
    """What runs a sample's blocks: the Python loop (:class:`._worker.BlockLoop`) or the native one
    (:class:`einet.runtime.native.NativeEngine`)."""

    on_cpu: bool

    def run(self, job: Job, stopped: Callable[[], bool] | None, at: float = math.inf) -> bool:
        """Run `job` until it ends, or it is stopped (True): `stopped()` or the perf_counter clock past `at`."""


class Driver(Protocol):
    """What the runtime asks of the way a call is driven."""

    @property
    def loop(self) -> Engine:
        """The engine it drives."""
    @property
    def late_errors(self) -> deque[BaseException]:
        """Errors after their caller had returned: raised by the next call."""
    # Whether the part in flight at an interrupt has ended by the time the call returns (its time is then
    # in the job's times): so in the caller's thread, where the call waits for it
    waits_for_part_in_flight: bool

    def run(self, job: Job, limit: InterruptCheck) -> bool:
        """Run `job` until it ends (True, not stopped) or its interrupt fires (False)."""

    def after_answer(self) -> None:
        """Work left for after the answer is made (learning, in the caller's thread)."""

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until no block of an earlier job is in flight (True) or `timeout` seconds pass (False)."""

    def stop(self) -> None:
        """Stop taking jobs (never blocks); safe from a finaliser."""

    def join(self, timeout: float | None = None) -> None:
        """Wait for the block in flight after :meth:`stop` (up to `timeout` seconds)."""


class InlineDriver:
    """The caller's own thread runs the blocks: nothing is handed between threads; the interrupt is
    asked between parts, so the call returns once the part in flight ends. Learning happens here too,
    once the answer is made."""

    waits_for_part_in_flight = True

    def __init__(self, loop: Engine, adaptation: Adaptation | None) -> None:
        self.loop, self.adaptation = loop, adaptation
        self.late_errors: deque[BaseException] = deque()  # learning failed after an answer was made

    def run(self, job: Job, limit: InterruptCheck) -> bool:
        try:
            return not self.loop.run(job, limit.poll, limit.at)
        finally:
            job.ended = time.perf_counter() - job.started

    def after_answer(self) -> None:
        if self.adaptation is not None and self.adaptation.pending():
            try:
                self.adaptation.update()
            except Exception as failure:  # raised by the next infer() or close(), as a worker's would be
                self.late_errors.append(failure)

    def wait_idle(self, timeout: float | None) -> bool:
        return True  # nothing is ever left in flight

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


class ThreadedDriver:
    """A long-lived worker thread runs the blocks (:class:`._worker.Worker`); the caller waits for the
    end or the interrupt, whichever comes first, and returns the held answer at once. The worker
    learns between samples."""

    waits_for_part_in_flight = False

    def __init__(self, worker: Worker) -> None:
        self.worker, self.loop, self.late_errors = worker, worker.loop, worker.late_errors

    def run(self, job: Job, limit: InterruptCheck) -> bool:
        self.worker.submit(job)
        try:
            return limit.wait(job.wait)
        except BaseException:  # the callable interrupt failed, or the caller was interrupted itself
            job.stopped = True
            job.collect()
            raise

    def after_answer(self) -> None:
        pass  # the worker learns before it is idle

    def wait_idle(self, timeout: float | None) -> bool:
        return self.worker.idle.wait(timeout)

    def stop(self) -> None:
        self.worker.stop()

    def join(self, timeout: float | None = None) -> None:
        self.worker.join(timeout)


# What runs the blocks: the native loop where it can run (a compiled network, and a compiler here to build the
# loop), else the Python loop; the Python loop; the native loop (einet.runtime.native), or a ValueError why not
ENGINES = ("auto", "python", "native")


def check_engine(name: object) -> str:
    """`name` if it names an engine; ValueError otherwise (the command asks before any work)."""
    if name not in ENGINES:
        raise EinetValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r:.40}")
    return str(name)


# A driver's rule: inline, a call returns up to one part late, where a worker returns at the interrupt instant
# plus a thread's wake-up. With the native engine's short parts inline is quicker to answer and more accurate
# (experiments/native_loop: on two vCPUs a wake-up's p99 is 0.5-1.2 ms idle, 9 ms beside two busy
# processes; a VGG-16 part's 0.1 ms), so it is the default where no part takes longer than this.
INLINE_PART_SECONDS = 5e-4


def inline_by_default(model: object, device: str, engine: str, et: ETProfile) -> bool:
    """Whether a runtime of `model` is inline unless told: where the native engine runs it (a compiled network
    on the CPU, `engine` not "python", the loop built here) and no part of `et` takes over INLINE_PART_SECONDS.
    Elsewhere on a worker: the Python loop's parts cost more, and a CUDA block ends only at a sync."""
    from ..models.compiled import CompiledNetwork

    if check_engine(engine) == "python" or device != "cpu" or not isinstance(model, CompiledNetwork):
        return False
    from .native import native_module

    return native_module() is not None and max(float(et.conv.max()), float(et.branch.max())) <= INLINE_PART_SECONDS


def make_driver(engine: str, loop: BlockLoop, inline: bool, threads: int, adaptation: Adaptation | None,
                lower_switch_interval: bool) -> Driver:
    """The driver of the engine `engine` over `loop`'s network, in the caller's thread (`inline`) or on a worker;
    ValueError saying why where the native engine was asked for and cannot run."""
    native = _native_engine(check_engine(engine), loop)

    if inline:
        return InlineDriver(loop if native is None else native, adaptation)
    if native is None:
        return ThreadedDriver(Worker(loop, threads, adaptation, lower_switch_interval))
    from .native import NativeDriver

    def python_worker(late_errors: deque[BaseException]) -> ThreadedDriver:  # (the native driver's learner learns)
        return ThreadedDriver(Worker(loop, threads, None, lower_switch_interval, late_errors))

    return NativeDriver(native, threads, adaptation, python_worker)


def _native_engine(engine: str, loop: BlockLoop) -> NativeEngine | None:
    """The native engine over `loop`'s network (with `loop` for what it cannot run) where `engine` asks for it and
    it can run; None for the Python loop."""
    if engine == "python":
        return None
    from ..models.compiled import CompiledNetwork
    from .native import NativeEngine, native_module

    if not isinstance(loop.model, CompiledNetwork):
        if engine == "auto":
            return None
        raise EinetValueError("the native engine runs compiled blocks: compile the bundle (einet compile) or give a "
                              "CompiledNetwork")
    module = native_module()  # (None is said once, on the einet logger)
    if module is None:
        if engine == "auto":
            return None
        raise EinetValueError("the native engine cannot be built here (no C++ compiler or ninja; the einet log says "
                              "why): use engine='python'")
    return NativeEngine(loop.model, loop.running.rule, loop.statistics, module, loop)
