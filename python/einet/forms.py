"""The forms a bundle's network runs in on this device: timed, compiled, loaded (needs torch).

- :func:`time_here`: the bundle's network timed in its fastest verified form here (``einet profile``):
  the prepared form with its layouts chosen here, or the compiled one where this device has verified
  packages and they are faster; the ET-profile records the form.
- :func:`compile_bundle`: every block and exit compiled for this device and thread count into the
  user's cache, verified against the network as trained on the bundle's timing images (``einet compile``).
- :func:`network_in`: the network in a form, as a runtime runs it; a compiled form whose packages are
  missing, changed or unverified falls back to the prepared form, said in one line on einet's logger.
- :func:`add_timed_device`: time here, select for this device, add its entry (``einet profile BUNDLE``,
  ``einet compile``, and ``einet build`` with ``profile.compile``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bundle import Bundle
    from .formats.profiles import ETRecord
    from .models.inference import InferenceForm

LOG = logging.getLogger("einet")


def _key(bundle: Bundle, threads: int) -> str:
    from .models.compiled import cache_key

    return cache_key(bundle.network_sha256, bundle.variant.as_dict(), threads)


# The form compiled blocks are made from: BatchNorm folded, every block in its trained layout (Inductor
# chooses its own); what a compiled form falls back to.
def _trained_layout() -> InferenceForm:
    from .models.inference import InferenceForm

    return InferenceForm("prepared")


def network_in(bundle: Bundle, form: InferenceForm | None, threads: int, constructor: Any = None) -> Any:
    """The bundle's network in `form` (None: as trained); compiled blocks for `threads` from the cache, or,
    where there are none that verify, the prepared form with a one-line warning on the ``einet`` logger."""
    from .models.compiled import CompileError, load_compiled

    if form is not None and form.name == "compiled":
        try:
            return load_compiled(_key(bundle, threads), bundle.num_exits)
        except CompileError as error:
            LOG.warning("einet: %s: running the prepared form instead", error)
            form = _trained_layout()
    return bundle.network(constructor, form)


def compile_bundle(bundle: Bundle, threads: int, constructor: Any = None,
                   log: Callable[[str], None] = print) -> Path:
    """Compile the bundle's network for this CPU and `threads` into the cache, verified (relative error
    <= 1e-4 at every exit on its timing images, the same answers on >= 99.9% of them, convolutions on
    prepacked weights); its cache folder. :class:`einet.models.compiled.CompileError` otherwise."""
    from .models.compiled import CompileError, compile_parts
    from .models.inference import verify
    from .profiling import on_worker

    eager = bundle.network(constructor)
    images = bundle.preprocess(bundle.timing_images())

    def check(compiled: Any) -> dict[str, float]:
        try:
            error = verify(eager, compiled, images, one_at_a_time=True)
        except ValueError as failure:
            raise CompileError(str(failure).replace("prepared form", "compiled form")) from None
        return {"relative_error": error, "images": len(images)}

    network = bundle.network(constructor, _trained_layout())
    folder = on_worker(threads, lambda: compile_parts(network, images[:1], _key(bundle, threads), check, log))
    build_native_loop(log)
    return folder


def time_here(bundle: Bundle, device: str = "cpu", threads: int = 1, warmup: int = 20, repeats: int = 400,
              constructor: Any = None, progress: bool = False, log: Callable[[str], None] = print) -> ETRecord:
    """The ET-profile of the bundle's network on `device` with `threads` torch threads, in its fastest
    verified form here (the prepared one, or the compiled one where verified packages are cached and
    quicker), timed on its timing images; the profile records the form, which a runtime then runs."""
    from .models.compiled import CompileError, load_compiled
    from .models.inference import InferenceForm
    from .profiling import fastest_form, profile_et, quickest

    samples = bundle.preprocess(bundle.timing_images())
    base = bundle.base_network(constructor)
    prepared = fastest_form(base, samples, threads, log)
    candidates = {prepared: bundle.network(constructor, prepared)}
    if device == "cpu":
        with contextlib.suppress(CompileError):  # none compiled for this device and thread count (einet compile)
            candidates[InferenceForm("compiled")] = load_compiled(_key(bundle, threads), bundle.num_exits)
    form = quickest(candidates, samples[:1], threads) if len(candidates) > 1 else prepared
    return profile_et(candidates[form], tuple(samples.shape[1:]), device=device, warmup=warmup, repeats=repeats,
                      threads=threads, samples=samples, name=bundle.name, progress=progress, form=form)


def add_timed_device(path: str | os.PathLike[str], device: str = "cpu", threads: int = 1, warmup: int = 20,
                     repeats: int = 400, constructor: Any = None, progress: bool = False,
                     log: Callable[[str], None] = print) -> tuple[ETRecord, Any]:
    """Time the bundle folder's network here (:func:`time_here`), select its configuration for this device on
    its held-out data as the build did, and add (or replace) the device's entry; (record, deployment)."""
    from .bundle import device_identity, read_bundle
    from .formats.manifest import add_device
    from .pipeline import reselect

    record = time_here(read_bundle(path), device, threads, warmup, repeats, constructor, progress, log)
    identity = device_identity(device, threads)
    deployment, predictor = reselect(Path(path), identity, record, progress=False)
    add_device(path, identity, record, deployment, predictor)
    return record, deployment


def ensure_compiled(bundle: Bundle, threads: int, constructor: Any = None,
                    log: Callable[[str], None] = print) -> None:
    """Compile the bundle's blocks for `threads` (:func:`compile_bundle`) unless a verified entry is cached."""
    from .models.compiled import CompileError, load_compiled

    try:
        load_compiled(_key(bundle, threads), bundle.num_exits)
    except CompileError:
        compile_bundle(bundle, threads, constructor, log)
    build_native_loop(log)


def build_native_loop(log: Callable[[str], None] = print) -> bool:
    """Build the native loop that runs compiled blocks (einet.runtime.native; once per torch, into the cache)
    now, so that the first einet.load need not: True where it is built; where it cannot be, the einet log says
    why in one line and the Python loop runs the blocks."""
    from .runtime.native import native_module

    built = native_module() is not None
    if built:
        log("the native loop is built: einet.load and einet run run the compiled blocks in C++")
    return built
