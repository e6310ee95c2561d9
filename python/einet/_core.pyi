"""Typed stubs for the native module einet._core (kept in step by tests/test_stubs.py)."""

from typing import overload

import numpy as np
import numpy.typing as npt

__version__: str
TIE_TOLERANCE: float
MAX_EXHAUSTIVE_BLOCKS: int
MAX_HYBRID_DEPTH: int
MAX_HYBRID_WORK_LOG2: int
MAX_RANDOM_BUDGET: int
MAX_SEARCH_WORK_LOG2: int
MAX_THREADS: int

class _CDF:
    # Stub only (the native classes share no base): the CDF every distribution has.
    @overload
    def cdf(self, t: float) -> float: ...
    @overload
    def cdf(self, t: npt.ArrayLike) -> npt.NDArray[np.float64]: ...

class Uniform(_CDF):
    low: float
    high: float
    def __init__(self, low: float, high: float) -> None: ...

class Normal(_CDF):
    mean: float
    std: float
    def __init__(self, mean: float, std: float) -> None: ...

class Exponential(_CDF):
    rate: float
    def __init__(self, rate: float) -> None: ...

class Empirical(_CDF):
    samples: npt.NDArray[np.float64]
    def __init__(self, samples: npt.ArrayLike) -> None: ...

class Deterministic(_CDF):
    deadline: float
    def __init__(self, deadline: float) -> None: ...

class Predictor:
    num_exits: int
    calibrated: bool
    def __init__(
        self, weights: list[npt.NDArray[np.float64]], biases: list[npt.NDArray[np.float64]], calibrated: bool
    ) -> None: ...
    def predict(self, observed: npt.ArrayLike, mask: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]: ...

class SearchOptions:
    @property
    def method(self) -> str: ...
    @property
    def depth(self) -> int: ...
    @property
    def budget(self) -> int: ...
    @property
    def seed(self) -> int: ...
    def __init__(self, method: str = "hybrid", depth: int = 4, budget: int = 1000, seed: int = 0) -> None: ...

class OnlineSession:
    def __init__(
        self, predictor: Predictor, conv: npt.ArrayLike, branch: npt.ArrayLike, dist: _Distribution, rule: str,
        options: SearchOptions, first_plan: npt.NDArray[np.generic], margin: float,
    ) -> None: ...
    def begin(self) -> None: ...
    def run_branch(self, block: int) -> bool: ...
    def observe(self, block: int, confidence: float, elapsed: float) -> None: ...
    def save(self) -> str: ...
    @staticmethod
    def load(text: str) -> OnlineSession: ...
    def _native_handle(self) -> tuple[int, int, int]: ...

_Distribution = Uniform | Normal | Exponential | Empirical | Deterministic

def expected_accuracy(
    mask: npt.NDArray[np.generic], scores: npt.ArrayLike, conv: npt.ArrayLike, branch: npt.ArrayLike,
    dist: _Distribution, start: int, elapsed: float, held: float, rule: str,
) -> float | npt.NDArray[np.float64]: ...
def search(
    scores: npt.ArrayLike, conv: npt.ArrayLike, branch: npt.ArrayLike, dist: _Distribution, options: SearchOptions,
    start: int, elapsed: float, held: float, rule: str,
) -> tuple[npt.NDArray[np.bool_], float, int]: ...
def search_batch(
    scores: npt.ArrayLike, conv: npt.ArrayLike, branch: npt.ArrayLike, dist: _Distribution, options: SearchOptions,
    start: int, elapsed: npt.ArrayLike, held: npt.ArrayLike, rule: str, threads: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.uint64]]: ...
def online_step(
    predictor: Predictor, observed: npt.ArrayLike, mask: npt.NDArray[np.generic], conv: npt.ArrayLike,
    branch: npt.ArrayLike, dist: _Distribution, options: SearchOptions, start: int, elapsed: float,
    held_exit: int, held_default: float, rule: str,
) -> tuple[npt.NDArray[np.bool_], float, int, npt.NDArray[np.float64], float]: ...
