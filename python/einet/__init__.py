"""einet: elastic DNN inference with unpredictable exit.

``import einet`` gives the planner (numpy only); the torch parts live in
``einet.models``, ``einet.profiling``, ``einet.predictor`` and ``einet.runtime``
and need the ``einet[torch]`` extra.
"""

try:
    from . import _core
except ImportError as error:  # pragma: no cover - only without a built extension
    raise ImportError(
        "einet's native module einet._core is missing: build and install the package with "
        "`pip install .` (or `pip install -e .`) from the source tree, not by adding python/ to sys.path"
    ) from error

from . import reference
from ._core import Deterministic, Empirical, Exponential, Normal, SearchOptions, Uniform
from ._core import Predictor as NativePredictor
from .planner import (
    BatchPlans,
    Distribution,
    ETProfile,
    OnlineStep,
    Plan,
    expected_accuracy,
    online_step,
    search,
    search_batch,
)

__version__: str = _core.__version__


def load(path: str, device: str = "cpu", **options: object) -> object:
    """A ready :class:`einet.runtime.ElasticRuntime` from a deployment bundle (``einet build``):
    ``runtime.infer(x, interrupt=...)``. Options: see :func:`einet.bundle.load` (needs ``einet[torch]``)."""
    from .bundle import load as load_bundle

    return load_bundle(path, device, **options)  # type: ignore[arg-type]


__all__ = [
    "BatchPlans",
    "Deterministic",
    "Distribution",
    "ETProfile",
    "Empirical",
    "Exponential",
    "NativePredictor",
    "Normal",
    "OnlineStep",
    "Plan",
    "SearchOptions",
    "Uniform",
    "__version__",
    "expected_accuracy",
    "load",
    "online_step",
    "reference",
    "search",
    "search_batch",
]
