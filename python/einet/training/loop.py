"""Training multi-exit networks: all exits jointly, or branches only on a frozen backbone.

Data: an einet :class:`~einet.data.ImageDataset` (the fast path), any map-style torch
``Dataset`` yielding (image tensor, label), or a ``DataLoader`` (see :func:`einet.data.as_batches`).

Several processes (``torchrun``): when a torch.distributed process group is initialised,
:func:`train` wraps the model in DistributedDataParallel, gives each process a shard of the
data (one seeded order, as DistributedSampler does; a DataLoader must bring its own
DistributedSampler, whose ``set_epoch`` is called every epoch), treats ``batch_size`` as the
global batch (each of K processes takes ``batch_size / K``), evaluates on shards and sums
the counts, and lets rank 0 alone write checkpoints.

Checkpoints (:mod:`einet.formats.checkpoint`) are written atomically after every epoch and hold
everything needed to resume (model, optimiser, schedule, history, the held-out split).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..choices import OPTIMIZERS, PRECISIONS, RECIPES, SCHEDULES
from ..data import ImageDataset, ImageShape, as_batches, count_batches, loader_is_sharded
from ..errors import EinetTypeError, EinetValueError
from ..formats.checkpoint import read_checkpoint, save_checkpoint
from ..models.base import MultiExitNetwork
from ..validation import number
from .accuracy import distributed_exit_accuracies, shardable
from .distributed import all_reduce, world
from .resume import resume_mismatch as resume_mismatch  # (einet.pipeline finds it here too)


class DivergedError(EinetValueError):
    """Training stopped: its loss became NaN or infinite (the checkpoint keeps the last good epoch)."""


@dataclass
class TrainConfig:
    """How to train. ``exit_weights`` default to uniform; ``freeze_backbone`` trains the branches only: the
    backbone's blocks and the final exit (the original network's head) keep their weights."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # one of SCHEDULES
    exit_weights: Sequence[float] | None = None
    freeze_backbone: bool = False
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    recipe: str = "joint"
    temperature: float = 3.0  # of the distillation targets
    distill_weight: float = 0.5  # loss = (1 - w) * cross-entropy + w * T^2 * KL(teacher || exit)
    # Mixed precision: forward and loss under bfloat16 autocast (weights, gradients and optimiser stay
    # float32). auto: bf16 on CUDA, where tensor cores make it ~2x faster, fp32 elsewhere.
    precision: str = "auto"  # auto | fp32 | bf16
    channels_last: bool | None = None  # NHWC memory layout (faster convolutions on CUDA); None: on CUDA only

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise EinetValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        number("lr", self.lr, 0.0, None, low_open=True)
        number("momentum", self.momentum, 0.0, 1.0)
        number("weight_decay", self.weight_decay, 0.0)
        for weight in self.exit_weights or ():
            number("an exit weight", weight, 0.0)
        if self.optimizer not in OPTIMIZERS:
            raise EinetValueError(f"unknown optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise EinetValueError(f"unknown schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.recipe not in RECIPES:
            raise EinetValueError(f"unknown recipe {self.recipe!r}: expected one of {', '.join(RECIPES)}")
        if not (math.isfinite(self.temperature) and self.temperature > 0) or not 0.0 <= self.distill_weight <= 1.0:
            raise EinetValueError(f"need temperature > 0 and 0 <= distill_weight <= 1, got {self.temperature} and "
                                  f"{self.distill_weight}")
        if self.precision not in PRECISIONS:
            raise EinetValueError(f"unknown precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.channels_last not in (None, True, False):
            raise EinetTypeError(f"channels_last must be True, False or None (auto), got {self.channels_last!r}")

    @property
    def on_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of forward and loss, or None for plain float32 (auto: bf16 on a GPU
        that has it, from Ampere on; older ones would emulate it slowly)."""
        if self.precision == "auto":
            return torch.bfloat16 if self.on_cuda and torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if self.precision == "bf16" else None

    @property
    def memory_format(self) -> torch.memory_format:
        on = self.channels_last if self.channels_last is not None else self.on_cuda
        return torch.channels_last if on else torch.contiguous_format


@dataclass
class History:
    """Per-epoch training loss, per-exit test accuracy and seconds spent."""

    loss: list[float] = field(default_factory=list)
    test_accuracy: list[list[float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def _expected_shape(spec: Mapping[str, Any] | None) -> ImageShape | None:
    """The image shape a checkpoint spec promises: a converted network's input shape, a zoo model's channels."""
    if not spec:
        return None
    if spec.get("input_shape"):
        channels, height, width = spec["input_shape"]
        return int(channels), int(height), int(width)
    return (int(spec["in_channels"]), None, None) if spec.get("in_channels") else None


def exit_weights(model: MultiExitNetwork, config: TrainConfig) -> torch.Tensor:
    """The loss weight of each exit: the config's schedule, or 1 each; checked against the exit count."""
    weights = config.exit_weights if config.exit_weights is not None else [1.0] * model.num_exits
    if len(weights) != model.num_exits or any(not (w >= 0 and math.isfinite(w)) for w in weights):
        raise EinetValueError(f"exit_weights must be {model.num_exits} finite values >= 0, got {list(weights)}")
    return torch.tensor(weights, dtype=torch.float32)


def exit_losses(outputs: Sequence[torch.Tensor], labels: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """[N]: each exit's training loss under the config's recipe."""
    ce = torch.stack([nn.functional.cross_entropy(logits, labels) for logits in outputs])
    if config.recipe == "joint":
        return ce
    t = config.temperature
    with torch.no_grad():
        if config.recipe == "distill":
            teacher_logits = outputs[-1].detach()
        else:  # geometric ensemble: the mean of every exit's log-probabilities
            teacher_logits = torch.stack([o.detach().log_softmax(1) for o in outputs]).mean(0)
        teacher = (teacher_logits / t).log_softmax(1)
    kl = torch.stack([nn.functional.kl_div((logits / t).log_softmax(1), teacher, log_target=True,
                                           reduction="batchmean") for logits in outputs])
    w = config.distill_weight
    mixed = (1 - w) * ce + w * t * t * kl
    if config.recipe == "distill":  # the teacher itself learns from the labels alone
        mixed = torch.cat([mixed[:-1], ce[-1:]])
    return mixed


def _trainable(model: MultiExitNetwork, config: TrainConfig) -> list[nn.Parameter]:
    if not config.freeze_backbone:
        return list(model.parameters())
    head = set(model.exits[-1].parameters())
    for p in [*model.backbone_parameters(), *head]:
        p.requires_grad_(False)
    return [p for p in model.branch_parameters(include_last=False) if p not in head]


def _set_train_mode(model: MultiExitNetwork, config: TrainConfig) -> None:
    model.train()
    if config.freeze_backbone:
        model.blocks.eval()  # frozen BN statistics too
        model.exits[-1].eval()


def _optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=True)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Any:
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        # torch's OneCycleLR divides by zero when its phases are shorter than a step: tiny runs get 10 steps
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total, 10),
                                                   pct_start=0.25)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total // 3), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def train(model: MultiExitNetwork, train_set: ImageDataset | Any, test_set: ImageDataset | Any | None = None,
          config: TrainConfig | None = None, checkpoint: str | os.PathLike[str] | None = None,
          model_spec: dict[str, Any] | None = None, progress: bool = True,
          split: Mapping[str, Any] | None = None) -> History:
    """Train every exit with the weighted sum of their cross-entropies; resume `checkpoint` if there (and
    this run's: one of other settings, model, split or shape is refused, :func:`resume_mismatch`).

    `train_set` and `test_set`: an ImageDataset, a map-style torch Dataset of (image tensor, label)
    or a DataLoader (:func:`einet.data.as_batches`). `model_spec` (e.g. ``{"name": "b_alexnet",
    "width": 0.5, ...}``, or the spec of :func:`einet.models.constructor.build_converted`) is stored in
    the checkpoint so that :func:`load_checkpoint` can rebuild the model; `split` (the held-out split
    the training data excludes, :meth:`einet.formats.split.HeldOutSplit.as_dict`) too, for later stages.

    In a torch.distributed process group (e.g. under ``torchrun``) this trains with
    DistributedDataParallel, as the module docstring describes; only rank 0 writes `checkpoint`.
    `config.threads` sets torch's thread count for the run only: it is restored on return.
    """
    config = config or TrainConfig()
    threads = torch.get_num_threads()
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        run = _Run.start(model, train_set, config, model_spec, split, Path(checkpoint) if checkpoint else None)
        for epoch in range(len(run.history.loss), config.epochs):
            run.epoch(epoch, train_set, test_set, progress and run.rank == 0)
    finally:
        torch.set_num_threads(threads)
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # handed back as it came
    return run.history


@dataclass
class _Run:
    """One training run's state, as a checkpoint holds it, and its steps (:func:`train`)."""

    model: MultiExitNetwork
    network: nn.Module  # the model, or its DistributedDataParallel wrapper
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    weights: torch.Tensor
    steps: int
    model_spec: dict[str, Any] | None
    split: Mapping[str, Any] | None
    path: Path | None
    rank: int
    world_size: int
    history: History = field(default_factory=lambda: History())

    @classmethod
    def start(cls, model: MultiExitNetwork, train_set: Any, config: TrainConfig, model_spec: dict[str, Any] | None,
              split: Mapping[str, Any] | None, path: Path | None) -> _Run:
        """A fresh run, or the one `path` holds (refused if it is another run's)."""
        rank, world_size = world()
        if config.batch_size % world_size:
            raise EinetValueError(f"batch_size {config.batch_size} is the global batch: it must be a multiple of "
                                  f"the {world_size} processes")
        if world_size > 1 and not shardable(train_set) and not loader_is_sharded(train_set):
            raise EinetValueError("with several processes a DataLoader must draw through a DistributedSampler; or "
                                  "pass the Dataset itself, which einet shards")
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)  # alike in every process: one order to shard
        weights = exit_weights(model, config).to(config.device)
        # (memory_format is missing from torch's stubs of Module.to, not from torch)
        model.to(config.device, memory_format=config.memory_format)  # type: ignore[call-overload]
        optimizer = _optimizer(_trainable(model, config), config)
        steps = count_batches(train_set, config.batch_size // world_size, world_size)
        if steps == 0:
            raise EinetValueError("the training set is empty")
        run = cls(model, model, config, optimizer, _scheduler(optimizer, config, steps), generator, weights, steps,
                  model_spec, split, path, rank, world_size)
        run.resume()
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = torch.device(config.device)
            run.network = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        return run

    def resume(self) -> None:
        """Carry on from the checkpoint at `path`, if there is one (every process, or none)."""
        path = self.path
        if path and self.world_size > 1:  # a rank without the file would start afresh
            found = all_reduce(torch.tensor([float(path.exists())], dtype=torch.float64), self.model)
            if 0 < float(found) < self.world_size:
                raise EinetValueError(f"{path} exists for {int(found)} of the {self.world_size} processes: to resume "
                                      f"on several machines, put the checkpoint on a file system they share")
        if not (path and path.exists()):
            return
        state = read_checkpoint(path)
        if mismatch := resume_mismatch(path, self.model, self.config, self.model_spec, self.split, state):
            raise EinetValueError(f"{path} {mismatch}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
        self.history = History(**state["history"])

    def epoch(self, epoch: int, train_set: Any, test_set: Any, progress: bool) -> None:
        """Train one epoch, then record it (loss, test accuracy per exit, seconds) and save the checkpoint."""
        started = time.perf_counter()
        loss = self._train_epoch(epoch, train_set, progress)
        if not math.isfinite(loss):  # every process sees the same summed loss: all stop alike
            kept = f"; {self.path} keeps epoch {epoch}'s weights" if self.path and self.path.exists() else ""
            raise DivergedError(f"the training loss became {loss} in epoch {epoch + 1} (learning rate "
                                f"{self.config.lr:g} too high, or non-finite inputs?){kept}")
        history = self.history
        history.loss.append(loss)
        history.test_accuracy.append(distributed_exit_accuracies(self.model, test_set, 500, self.rank,
                                                                  self.world_size) if test_set is not None else [])
        history.seconds.append(time.perf_counter() - started)
        if progress:
            from tqdm.auto import tqdm

            accuracy = " ".join(f"{100 * a:.1f}" for a in history.test_accuracy[-1])
            tqdm.write(f"epoch {epoch + 1}: loss {history.loss[-1]:.3f}, test accuracy per exit [{accuracy}], "
                       f"{history.seconds[-1]:.0f} s")
        if self.path and self.rank == 0:
            save_checkpoint(self.path, self.model, self.model_spec, optimizer=self.optimizer,
                            scheduler=self.scheduler, generator=self.generator, torch_rng=torch.get_rng_state(),
                            history=history, config=self.config, world_size=self.world_size,
                            **({} if self.split is None else {"split": dict(self.split)}))
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()  # the checkpoint is complete before any process goes on (or resumes from it)

    def _train_epoch(self, epoch: int, train_set: Any, progress: bool) -> float:
        """One pass over this process's shard; the mean training loss over every process."""
        from tqdm.auto import tqdm

        model, config = self.model, self.config
        _set_train_mode(model, config)
        total, seen = torch.zeros((), device=config.device), 0
        correct = torch.zeros(model.num_exits, device=config.device)
        batches = as_batches(train_set, config.batch_size // self.world_size, shuffle=True, generator=self.generator,
                             rank=self.rank, world_size=self.world_size, epoch=epoch,
                             num_classes=(self.model_spec or {}).get("num_classes"),
                             expected_shape=_expected_shape(self.model_spec))
        bar = tqdm(batches, total=self.steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   leave=False)
        autocast = config.autocast_dtype
        for images, labels in bar:
            images = images.to(config.device, non_blocking=True)
            if images.dim() == 4:
                images = images.contiguous(memory_format=config.memory_format)
            labels = labels.to(config.device, non_blocking=True)
            with torch.autocast(torch.device(config.device).type, dtype=autocast, enabled=autocast is not None):
                outputs = self.network(images)
                loss = (exit_losses(outputs, labels, config) * self.weights).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            self.scheduler.step()
            seen += len(labels)
            with torch.no_grad():
                total += loss.detach() * len(labels)  # kept on the device: no sync per step
                for i, logits in enumerate(outputs):
                    correct[i] += (logits.argmax(1) == labels).sum()
            if progress and bar.n % 10 == 0:
                bar.set_postfix(loss=f"{float(total) / seen:.3f}",
                                acc=" ".join(f"{100 * c / seen:.0f}" for c in correct.tolist()))
        if self.world_size == 1:
            return float(total) / seen
        import torch.distributed as dist

        for buffer in model.buffers():  # BN statistics: rank 0's, as DDP broadcasts them before each step
            dist.broadcast(buffer, 0)
        summed = all_reduce(torch.stack([total.double().cpu(), torch.tensor(float(seen), dtype=torch.float64)]),
                            model)
        return float(summed[0] / summed[1])
