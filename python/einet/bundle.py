"""The deployment bundle: what a user ships, and ``einet.load`` that turns it into a runtime.

A bundle is a folder (``einet build`` writes one; ``pack`` zips it into one ``.einet`` file, which
loads the same) holding everything needed to rebuild the elastic runtime and nothing that runs
code:

- ``manifest.json``: versioned and schema-checked, with a SHA-256 of itself and of every file;
- the network: its checkpoint (``network.pt``: the zoo name and sizes or the user's constructor
  name and keyword arguments, the exits and their pools, the weights, loaded with
  ``torch.load(weights_only=True)``; a thumbnail exit's weights in it too) and the variant built on
  it (thumbnail exit, second look and its depth), the input size, normalisation and class names;
- per device it was timed on (CPU model and threads, or CUDA device name): the ET-profile, the
  configuration chosen for it on held-out data (policy by kind and parameter, rule and ensemble
  weights, time-zero answer, every candidate's held-out score) and its predictor;
- the exit-time distribution and its horizon in milliseconds; whether the runtime adapts;
- the held-out split (fraction, seed, fingerprint of the data), its CS-profile (re-selection for a
  new device needs it), the test split's CS-profile when built with one (``einet evaluate``), a
  few hundred real inputs to time blocks with on a new device;
- provenance: einet version, the config and every stage's hash.

Loading verifies every checksum and field before anything is built; a converted network's
constructor is imported only when the caller names it (as for checkpoints).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import EinetTypeError, EinetValueError
from .formats.manifest import read_manifest
from .formats.manifest_schema import HOLDOUT, NETWORK, TEST, TIMING, BundleError, DeviceEntry, Manifest, device_key

if TYPE_CHECKING:
    from .runtime import ElasticRuntime

__all__ = ["Bundle", "DeviceEntry", "cpu_name", "device_identity", "exit_distribution", "load", "read_bundle"]
from .formats.npz import read_arrays
from .formats.profiles import CSProfile, ETRecord
from .planner import Distribution, ETProfile, NativePredictor
from .policies import Policy
from .variants import Variant, load_variant

T = TypeVar("T")


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_identity(device: str = "cpu", threads: int = 1) -> dict[str, Any]:
    """What an ET-profile is keyed by: the device kind and model and, on a CPU, the runtime's threads
    (block times depend on all three); the torch version is recorded beside them."""
    import torch

    if device.startswith("cuda"):
        return {"kind": "cuda", "name": torch.cuda.get_device_name(device), "threads": threads,
                "torch": torch.__version__}
    return {"kind": "cpu", "name": cpu_name(), "threads": threads, "torch": torch.__version__}


def exit_distribution(kind: str, horizon_ms: float) -> Distribution:
    """The exit-time distribution over a horizon in milliseconds (uniform over it, normal around its middle,
    exponential with half of it as mean), in seconds."""
    from .distributions import relative_distribution

    return relative_distribution(kind, horizon_ms * 1e-3)


class Bundle:
    """A bundle read and verified (:func:`read_bundle`); builds the network, policies and the runtime."""

    def __init__(self, folder: Path, manifest: Manifest, path: Path | None = None) -> None:
        self.folder, self.manifest = folder, manifest
        self.path = path or folder  # what messages name: a packed file is read from its cached copy, `folder`
        self.variant, self.split = manifest.variant, manifest.split
        self.dist_kind, self.horizon_ms = manifest.exit_kind, manifest.horizon_ms
        self.devices = list(manifest.devices)
        self._holdout: CSProfile | None = None
        self._memos: dict[str, dict[tuple[int, ...], float]] = {}  # per device entry: see policy()

    def _read(self, read: Callable[..., T], file: str, *args: Any) -> T:
        """`read` of one of the bundle's files; its errors name the file in the bundle the user named (not in
        a packed bundle's cached copy) and are BundleErrors."""
        try:
            return read(self.folder / file, *args)
        except ValueError as error:
            raise BundleError(str(error).replace(str(self.folder), str(self.path))) from None

    def _fits(self, what: str, exits: int) -> None:
        if exits != self.num_exits:
            raise BundleError(f"{self.path}: its {what} has {exits} exits, its network {self.num_exits}")

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.input.classes

    @property
    def num_exits(self) -> int:
        return self.manifest.num_exits

    @property
    def threads(self) -> int:
        """The runtime's threads the bundle was built for (its ET-profile's, on a CPU)."""
        return self.manifest.threads

    @property
    def test_data(self) -> str | None:
        """The fingerprint of the test split its test CS-profile was measured on (None: none)."""
        return self.manifest.test_data

    @property
    def select_options(self) -> Mapping[str, Any]:
        """The options a new device is selected with (``einet profile BUNDLE``)."""
        return self.manifest.select

    @property
    def network_sha256(self) -> str:
        return self.manifest.files[NETWORK]

    def entry(self, device: str = "cpu", threads: int | None = None) -> DeviceEntry:
        """The entry for this machine's `device` (CPU: with `threads`, default the runtime's), or a
        BundleError naming the command that adds one."""
        threads = threads or self.threads
        key = device_key(device_identity(device, threads))
        for entry in self.devices:
            if entry.key == key:
                return entry
        known = "; ".join(entry.key for entry in self.devices) or "none"
        raise BundleError(f"{self.path} has no ET-profile for this device ({key}; it has: {known}): add one with "
                          f"`einet profile {self.path} --device {device.split(':')[0]} --runtime-threads {threads}`")

    def et(self, entry: DeviceEntry) -> ETRecord:
        record = self._read(ETRecord.load, entry.et)
        self._fits(f"ET-profile for {entry.key!r}", len(record.conv))
        return record

    def holdout(self) -> CSProfile:
        """The held-out CS-profile (read once: an adaptive runtime plans from it again and again)."""
        if self._holdout is None:
            self._holdout = self._profile(HOLDOUT, "held-out CS-profile")
        return self._holdout

    def test(self) -> CSProfile:
        if not self.manifest.has_test:
            raise BundleError(f"{self.path} holds no test-split CS-profile (built without a test split)")
        return self._profile(TEST, "test CS-profile")

    def _profile(self, file: str, what: str) -> CSProfile:
        profile = self._read(CSProfile.load, file)
        self._fits(what, profile.num_exits)
        if profile.labels.size and int(profile.labels.max()) >= len(self.classes):
            raise BundleError(f"{self.path}: its {what} has labels beyond its {len(self.classes)} classes")
        return profile

    def timing_images(self) -> np.ndarray:
        arrays, _ = self._read(read_arrays, TIMING, "timing-images")
        images = arrays.get("images")
        shape = self.manifest.input.shape
        if images is None or images.ndim != 4 or images.dtype != np.uint8 or \
                (images.shape[3], *images.shape[1:3]) != shape or not len(images):
            raise BundleError(f"{self.path}: its timing images are not uint8 images of (C, H, W) = {shape}")
        return images

    def distribution(self, kind: str | None = None) -> Distribution:
        return exit_distribution(kind or self.dist_kind, self.horizon_ms)

    def predictor(self, entry: DeviceEntry) -> NativePredictor | None:
        from .formats.predictor_file import read_predictor

        if entry.deployment.predictor is None:
            return None
        return self._read(read_predictor, entry.deployment.predictor).to_native()

    def network(self, constructor: str | Any | None = None, form: Any = None) -> Any:
        """The network the runtime runs (eval mode, CPU): the checkpoint's, with the bundle's variant, in
        the inference `form` (:class:`einet.models.inference.InferenceForm`; None: as trained)."""
        built, state = self._read(load_variant, NETWORK, self.variant, constructor, form)
        spec = state["spec"]
        if spec.get("num_classes") != len(self.classes):
            raise BundleError(f"{self.path}: its network has {spec.get('num_classes')} classes, its manifest names "
                              f"{len(self.classes)}")
        if built.num_exits != self.num_exits:
            raise BundleError(f"{self.path}: the network has {built.num_exits} exits, the manifest says "
                              f"{self.num_exits}")
        return built

    def base_network(self, constructor: str | Any | None = None) -> Any:
        """The checkpoint's network without the bundle's variant, as trained: what inference forms are
        chosen on (einet.forms)."""
        return self._read(load_variant, NETWORK, Variant(), constructor)[0]

    @property
    def input_spec(self) -> Any:
        """The network's input (:class:`einet.runtime.InputSpec`): its shape and normalisation."""
        from .runtime.inputs import InputSpec

        spec = self.manifest.input
        return InputSpec.of(spec.shape, spec.mean, spec.std)

    def preprocess(self, images: np.ndarray) -> Any:
        """uint8 images [N, H, W, C] to the normalised float tensor [N, C, H, W] the network takes."""
        return self.input_spec.preprocess(images)

    def policy(self, entry: DeviceEntry, et: ETProfile, dist: Distribution | None = None,
               predictor: NativePredictor | None = None) -> Policy:
        """The deployed policy for profile `et` (the device's, without EINet's planning) and `dist`: planned
        kinds planned again from the held-out split for them (:func:`einet.evaluation.select.deployed_policy`)."""
        from .evaluation.select import deployed_policy

        deployment = entry.deployment
        holdout = self.holdout() if deployment.spec.plans else None
        return deployed_policy(deployment, et, dist or self.distribution(), predictor, holdout,
                               self._memos.setdefault(entry.key, {}))

    def planned_profile(self, entry: DeviceEntry, et: ETProfile) -> ETProfile:
        """The profile the entry's policy plans and is scored with (:func:`einet.evaluation.select.planned_profile`)."""
        from .evaluation.select import planned_profile

        return planned_profile(entry.deployment, et)

    def form(self, entry: DeviceEntry) -> Any:
        """The inference form the entry's ET-profile timed (:class:`einet.models.inference.InferenceForm`):
        what its runtime runs, so that its plans and promise hold (as trained where the profile says none)."""
        from .models.inference import InferenceForm

        try:  # (its layouts are checked against the network when applied: Bundle.network)
            return InferenceForm.from_record(self.et(entry).meta.get("form"))
        except ValueError as error:
            raise BundleError(f"{self.path}: the ET-profile of {entry.key!r}: {error}") from None

    def runtime(self, device: str = "cpu", threads: int | None = None, adapt: bool | None = None,
                constructor: str | Any | None = None, inline: bool | None = None, eager: bool = False,
                engine: str = "auto") -> ElasticRuntime:
        """An :class:`einet.runtime.ElasticRuntime` running the deployed configuration on `device`;
        adaptive (einet.runtime.adaptive) unless `adapt` is False or the bundle says so. `inline`: the
        blocks in the caller's thread, with its torch settings (give it the `threads` the bundle was timed
        with: ``torch.set_num_threads``); False: on a worker; None (the default): inline where the native
        engine runs parts no longer than the latency goal, else on a worker
        (:func:`einet.runtime.inline_by_default`). The network runs in the form its ET-profile timed
        (:meth:`form`); `eager`: as trained instead, for comparison (plans still use the profile's times); `engine`:
        what runs the blocks (by default the native loop over the compiled blocks where the bundle is compiled
        and a compiler is here, else the Python loop; see :class:`ElasticRuntime`)."""
        from .forms import network_in
        from .runtime import ElasticRuntime, inline_by_default
        from .runtime.adaptive import Adaptation

        device, threads = _runtime_options(device, threads, adapt, constructor, inline)
        if type(eager) is not bool:
            raise EinetTypeError(f"eager must be True or False, got {eager!r:.40}")
        threads = threads or self.threads
        entry = self.entry(device, threads)
        predictor = self.predictor(entry)
        et = self.et(entry).profile
        model = network_in(self, None if eager else self.form(entry), threads, constructor)
        if inline is None:
            inline = inline_by_default(model, device, engine, et)
        rule = entry.deployment.rule
        runtime_threads = 1 if inline else threads  # (inline: the caller's thread and its torch settings)
        if adapt if adapt is not None else self.manifest.adapt:
            adaptation = Adaptation(lambda profile, dist: self.policy(entry, profile, dist, predictor), et,
                                    self.distribution(), self.horizon_ms * 1e-3,
                                    **self.manifest.adaptation)
            return ElasticRuntime(model, rule=rule, device=device, threads=runtime_threads, adapt=adaptation,
                                  inline=inline, input_spec=self.input_spec, engine=engine)
        return ElasticRuntime(model, self.policy(entry, et, None, predictor), rule, device, runtime_threads,
                              inline=inline, input_spec=self.input_spec, engine=engine)


def _runtime_options(device: object, threads: object, adapt: object, constructor: object,
                     inline: object) -> tuple[str, int | None]:
    """A runtime's options checked before anything is read or built: (device, threads); TypeError or
    ValueError naming the option otherwise."""
    import torch

    from .validation import MAX_THREADS, number

    if not isinstance(device, str):
        raise EinetTypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {device!r:.40}")
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise EinetValueError(f"device {device!r:.40} is not a device name such as 'cpu' or 'cuda:0'") from None
    if kind.type not in ("cpu", "cuda"):
        raise EinetValueError(f"device {device!r:.40}: einet runs on 'cpu' or 'cuda', not {kind.type!r}")
    if kind.type == "cuda" and not (torch.cuda.is_available() and (kind.index or 0) < torch.cuda.device_count()):
        raise EinetValueError(f"device {device!r:.40}: no such CUDA device here (torch sees "
                              f"{torch.cuda.device_count() if torch.cuda.is_available() else 'none'})")
    if adapt is not None and type(adapt) is not bool:
        raise EinetTypeError(f"adapt must be True, False or None (the bundle's choice), got {adapt!r:.40}")
    if inline is not None and type(inline) is not bool:
        raise EinetTypeError(f"inline must be True, False or None (chosen for the bundle), got {inline!r:.40}")
    if constructor is not None and not (isinstance(constructor, str) or callable(constructor)):
        raise EinetTypeError(f"constructor must be a 'package.module:callable' name or a callable, got "
                             f"{type(constructor).__name__}")
    return device, None if threads is None else int(number("threads", threads, 1, MAX_THREADS, integer=True))


def load(path: str | os.PathLike[str], device: str = "cpu", *, threads: int | None = None, adapt: bool | None = None,
         constructor: str | Any | None = None, inline: bool | None = None, eager: bool = False,
         engine: str = "auto") -> ElasticRuntime:
    """A ready :class:`einet.runtime.ElasticRuntime` from a bundle (folder or packed file): ``runtime.infer(x,
    interrupt=...)``. `constructor`: for a network converted from a user's constructor, its name
    (importing it runs its code, so only when named) or the callable itself. `inline`, `eager`, `engine`: see
    :meth:`Bundle.runtime`."""
    return read_bundle(path).runtime(device, threads, adapt, constructor, inline, eager, engine)


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """A bundle folder or packed file, verified (:func:`einet.formats.manifest.read_manifest`)."""
    return Bundle(*read_manifest(path), Path(path))
