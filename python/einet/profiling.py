"""Measuring the block-wise profiles of a multi-exit model (needs torch; the profiles themselves
are :mod:`einet.formats.profiles`).

- ET-profile: after warm-up, over repeats. CPU: a monotonic nanosecond clock. CUDA: CUDA events,
  synchronising once per repeat, not per block.
- CS-profile: the model run over a dataset, every exit's confidence, prediction and correctness.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import EinetValueError
from .formats.profiles import LOG_PROB_CLASSES, CSProfile, ETRecord

T = TypeVar("T")
K = TypeVar("K")

if TYPE_CHECKING:
    import torch

    from .data import ImageDataset
    from .models.base import MultiExitNetwork
    from .models.inference import InferenceForm

def environment(device: str, batch_size: int, dtype: str) -> dict[str, Any]:
    """Where a profile was measured: device name, batch size, dtype and library versions."""
    import torch

    from . import __version__

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else (platform.processor()
                                                                                   or platform.machine())
    return {"device": device, "device_name": name, "batch_size": batch_size, "dtype": dtype,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "einet": __version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _timer(device: torch.device) -> Any:
    """A clock for one block: returns a start() / stop() pair; CUDA events on GPU, ns counter on CPU."""
    import torch

    if device.type == "cuda":
        class CudaTimer:
            def __init__(self) -> None:
                self.start_event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                self.stop_event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

            def start(self) -> None:
                self.start_event.record()

            def stop(self) -> None:
                self.stop_event.record()

            def seconds(self) -> float:  # after the repeat's one synchronize
                return float(self.start_event.elapsed_time(self.stop_event)) / 1e3

        return CudaTimer

    class CpuTimer:
        def start(self) -> None:
            self.begin = time.perf_counter_ns()

        def stop(self) -> None:
            self.end = time.perf_counter_ns()

        def seconds(self) -> float:
            return (self.end - self.begin) / 1e9

    return CpuTimer


def profile_et(model: MultiExitNetwork, input_shape: tuple[int, ...], device: str = "cpu", batch_size: int = 1,
               warmup: int = 10, repeats: int = 50, dtype: str = "float32", progress: bool = True,
               name: str | None = None, threads: int = 1, samples: torch.Tensor | None = None,
               form: InferenceForm | None = None) -> ETRecord:
    """Measure every block's conv-part and branch time on `device` (inputs of `input_shape` without batch).
    `form`: the inference form `model` is in, recorded in the profile (a runtime runs what was timed).

    Pass real inputs as `samples` ([K, *input_shape]; repeats cycle through them): block
    times depend on the data (on this project's CPU a trained B-AlexNet's last block takes
    1.2 ms on CIFAR images but 0.85 ms on Gaussian noise), and noise is only the fallback.

    The measurement runs on a worker thread with `threads` intra-op threads, exactly as
    :class:`einet.runtime.ElasticRuntime` runs the model, so the profile is what the runtime
    will see. (On a small CPU, torch's thread team in a non-main thread behaves differently
    from the main thread's: profiling in the main thread mispredicts the runtime by up to 3x.)
    """
    record = on_worker(threads, lambda: _measure_et(model, input_shape, device, batch_size, warmup, repeats, dtype,
                                                    progress, name, threads, samples))
    if form is not None:
        record.meta["form"] = form.record()
    return record


def chain_times(networks: Mapping[K, MultiExitNetwork], sample: torch.Tensor, rounds: int = 5,
                repeats: int = 10) -> dict[K, np.ndarray]:
    """Each network's part times in seconds ([N, 2]: conv part i, exit i) running all its blocks and exits
    on `sample` ([1, ...]) in this thread: per round the median of `repeats` chains, the networks alternated
    over `rounds` after one round of warm-up, the median round (side by side, so load hits all alike)."""
    import torch

    def chain(network: MultiExitNetwork) -> np.ndarray:
        times = np.empty((network.num_exits, 2))
        h: Any = sample
        for i in range(network.num_exits):
            started = time.perf_counter()
            h = network.forward_block(i, h)
            ended = time.perf_counter()
            network.forward_exit(i, h)
            times[i] = ended - started, time.perf_counter() - ended
        return times

    measured: dict[K, list[np.ndarray]] = {key: [] for key in networks}
    with torch.inference_mode():
        for _ in range(rounds + 1):
            for key, network in networks.items():
                measured[key].append(np.median([chain(network) for _ in range(repeats)], axis=0))
    return {key: np.median(per_round[1:], axis=0) for key, per_round in measured.items()}


def quickest(networks: Mapping[K, MultiExitNetwork], sample: torch.Tensor, threads: int = 1) -> K:
    """The key of the network in `networks` that runs all its blocks and exits on `sample` in the least
    time (:func:`chain_times`), timed on a worker with `threads` torch threads."""
    times = on_worker(threads, lambda: chain_times(networks, sample))
    return min(times, key=lambda key: float(times[key].sum()))


def fastest_form(model: MultiExitNetwork, samples: torch.Tensor, threads: int = 1,
                 log: Callable[[str], None] = print) -> InferenceForm:
    """The fastest verified prepared form of `model` here (:mod:`einet.models.inference`): each
    block's layout timed on a worker with `threads` torch threads, checked against the network as trained
    on `samples` (real inputs, a batch); the eager form, said in one line, where it does not check out."""
    from .models.inference import InferenceForm, choose_form, verify

    form = on_worker(threads, lambda: choose_form(model, samples[:1]))
    try:
        verify(model, form.apply(model), samples)
    except ValueError as error:
        log(f"inference form: {error}: running the network as trained (eager)")
        return InferenceForm()
    return form


def on_worker(threads: int, work: Callable[[], T]) -> T:
    """`work()` on a fresh thread with `threads` torch intra-op threads, as the runtime's worker runs blocks
    (on a small CPU, torch's thread team in a non-main thread behaves differently from the main thread's);
    its result, or its error raised here."""
    import threading

    import torch

    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        torch.set_num_threads(threads)
        try:
            result.append(work())
        except BaseException as error:  # re-raised in the caller's thread
            errors.append(error)

    worker = threading.Thread(target=run, name="einet-profile")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]
    return result[0]


def _measure_et(model: MultiExitNetwork, input_shape: tuple[int, ...], device: str, batch_size: int, warmup: int,
                repeats: int, dtype: str, progress: bool, name: str | None, threads: int,
                samples: torch.Tensor | None) -> ETRecord:
    import torch
    from tqdm.auto import tqdm

    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise EinetValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1; got {repeats}, {warmup}, {batch_size}")
    target = torch.device(device)
    torch_dtype = getattr(torch, dtype)
    model = model.to(target, torch_dtype).eval()
    if samples is None:
        samples = torch.randn(batch_size, *input_shape)
    elif tuple(samples.shape[1:]) != tuple(input_shape) or samples.shape[0] < batch_size:
        raise EinetValueError(f"samples must be [K >= {batch_size}, {', '.join(map(str, input_shape))}], "
                              f"got {tuple(samples.shape)}")
    inputs = samples.to(target, torch_dtype)
    batches = max(1, inputs.shape[0] // batch_size)
    timer = _timer(target)
    n = model.num_exits
    conv_timers = [timer() for _ in range(n)]
    branch_timers = [timer() for _ in range(n)]
    conv = np.zeros((repeats, n))
    branch = np.zeros((repeats, n))
    with torch.inference_mode():
        for r in tqdm(range(warmup + repeats), desc="ET-profile", disable=not progress, leave=False):
            first = (r % batches) * batch_size
            h = inputs[first:first + batch_size]
            for i in range(n):
                conv_timers[i].start()
                h = model.forward_block(i, h)
                conv_timers[i].stop()
                branch_timers[i].start()
                model.forward_exit(i, h).float().softmax(-1).max(-1)  # as the runtime reads an answer
                branch_timers[i].stop()
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            if r >= warmup:
                conv[r - warmup] = [t.seconds() for t in conv_timers]
                branch[r - warmup] = [t.seconds() for t in branch_timers]
    meta = environment(device, batch_size, dtype) | {"model": name or type(model).__name__, "repeats": repeats,
                                                      "warmup": warmup, "input_shape": list(input_shape),
                                                      "threads": threads}
    q = {p: (np.percentile(conv, p, axis=0), np.percentile(branch, p, axis=0)) for p in (50, 90, 99)}
    return ETRecord(q[50][0], q[50][1], q[90][0], q[99][0], q[90][1], q[99][1], meta)


def profile_cs(model: MultiExitNetwork, dataset: ImageDataset | Any, device: str = "cpu", batch_size: int = 500,
               progress: bool = True, name: str | None = None, split: str | None = None,
               extra_meta: Mapping[str, Any] | None = None) -> CSProfile:
    """Every exit's confidence, prediction, correctness and log-probabilities on every sample of `dataset`:
    an ImageDataset (scored without augmentation), a map-style torch Dataset of (image tensor, label)
    or a DataLoader, in their order (see :func:`einet.data.as_batches`).
    `extra_meta` (e.g. zoo name, width, training recipe) is stored in the profile's metadata."""
    import torch
    from tqdm.auto import tqdm

    from .data import as_batches, count_batches

    target = torch.device(device)
    model = model.to(target).eval()
    confidence, prediction, labels, log_probs, top_classes = [], [], [], [], []
    with torch.inference_mode():
        batches = as_batches(dataset, batch_size, augment=False)
        for images, y in tqdm(batches, total=count_batches(dataset, batch_size), desc="CS-profile",
                              disable=not progress, leave=False):
            logp = torch.stack([logits.float().log_softmax(1) for logits in model(images.to(target))], 1)
            best = logp.max(dim=2)
            confidence.append(best.values.exp().cpu())
            prediction.append(best.indices.cpu())
            labels.append(y.cpu())
            if logp.shape[2] <= LOG_PROB_CLASSES:
                log_probs.append(logp.half().cpu())
            else:
                top = logp.topk(LOG_PROB_CLASSES, dim=2)
                log_probs.append(top.values.half().cpu())
                top_classes.append(top.indices.short().cpu())
    if not labels:
        raise EinetValueError("cannot profile an empty dataset")
    conf = torch.cat(confidence).numpy()
    pred = torch.cat(prediction).numpy().astype(np.int64)
    lab = torch.cat(labels).numpy().astype(np.int64)
    meta = {"model": name or type(model).__name__, "device": device, "samples": int(lab.size), "split": split}
    return CSProfile(np.clip(conf, 0.0, 1.0), pred, pred == lab[:, None], lab, {**meta, **(extra_meta or {})},
                     torch.cat(log_probs).numpy(), torch.cat(top_classes).numpy() if top_classes else None)
