"""einet: elastic DNN inference with unpredictable exit.

The stable API is what ``einet.__all__`` names, plus the public modules that docs/api.md lists
(``einet.api_reference.PUBLIC_MODULES``: models, profiling, predictor, training, data, runtime...).
:mod:`einet.lab` gathers the lab's tools, with no stability promise; every other module is internal.

``import einet`` gives the planner (numpy only); the bundle, the runtime and the models are imported
when first used, and the torch parts need the ``einet[torch]`` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
from .errors import EinetError, EinetTypeError, EinetValueError
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

if TYPE_CHECKING:  # the same names as _LAZY (tests/test_types.py checks): what a type checker sees
    from .bundle import Bundle, load, read_bundle
    from .data import DatasetError
    from .formats.manifest import BundleError
    from .formats.npz import ProfileFormatError
    from .models import ConversionError, MultiExitNetwork, build, convert
    from .models.compiled import CompileError
    from .runtime import Answer, ElasticRuntime, NonFiniteError
    from .training import DivergedError
    from .validation import ResourceLimitError

__version__: str = _core.__version__

# Imported on first use, so that `import einet` stays numpy-only: name -> the module that defines it.
_LAZY = {
    "Bundle": "bundle",
    "load": "bundle",
    "read_bundle": "bundle",
    "DatasetError": "data",
    "BundleError": "formats.manifest",
    "ProfileFormatError": "formats.npz",
    "ConversionError": "models",
    "MultiExitNetwork": "models",
    "build": "models",
    "convert": "models",
    "CompileError": "models.compiled",
    "Answer": "runtime",
    "ElasticRuntime": "runtime",
    "NonFiniteError": "runtime",
    "DivergedError": "training",
    "ResourceLimitError": "validation",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'einet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # once: later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Answer",
    "BatchPlans",
    "Bundle",
    "BundleError",
    "CompileError",
    "ConversionError",
    "DatasetError",
    "Deterministic",
    "Distribution",
    "DivergedError",
    "ETProfile",
    "EinetError",
    "EinetTypeError",
    "EinetValueError",
    "ElasticRuntime",
    "Empirical",
    "Exponential",
    "MultiExitNetwork",
    "NativePredictor",
    "NonFiniteError",
    "Normal",
    "OnlineStep",
    "Plan",
    "ProfileFormatError",
    "ResourceLimitError",
    "SearchOptions",
    "Uniform",
    "__version__",
    "build",
    "convert",
    "expected_accuracy",
    "load",
    "online_step",
    "read_bundle",
    "reference",
    "search",
    "search_batch",
]
