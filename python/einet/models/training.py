"""Training multi-exit networks: all exits jointly, or branches only on a frozen backbone.

Checkpoints are written atomically (temporary file, then rename) after every
epoch, hold everything needed to resume (model, optimiser, schedule, history),
and load with ``torch.load(weights_only=True)``: no arbitrary code runs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageDataset
from .base import MultiExitNetwork

CHECKPOINT_VERSION = 1

# How the exits learn. ``joint``: the weighted sum of every exit's cross-entropy (the paper).
# ``distill``: plus self-distillation from the final exit (Phuong & Lampert, ICCV 2019; BYOT).
# ``distill-ensemble``: plus distillation from the detached geometric ensemble of all exits, a
# teacher that early exits can follow more closely than the final one (as in ensemble-teacher
# self-distillation for anytime networks).
RECIPES = ("joint", "distill", "distill-ensemble")


@dataclass
class TrainConfig:
    """How to train. ``exit_weights`` default to uniform; ``freeze_backbone`` trains branches only."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | step | constant
    exit_weights: Sequence[float] | None = None
    freeze_backbone: bool = False
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    recipe: str = "joint"
    temperature: float = 3.0  # of the distillation targets
    distill_weight: float = 0.5  # loss = (1 - w) * cross-entropy + w * T^2 * KL(teacher || exit)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}: expected 'sgd' or 'adam'")
        if self.schedule not in ("onecycle", "cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}: expected onecycle, cosine, step or constant")
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}: expected one of {', '.join(RECIPES)}")
        if not self.temperature > 0 or not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"need temperature > 0 and 0 <= distill_weight <= 1, got {self.temperature} and "
                             f"{self.distill_weight}")


@dataclass
class History:
    """Per-epoch training loss, per-exit test accuracy and seconds spent."""

    loss: list[float] = field(default_factory=list)
    test_accuracy: list[list[float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def exit_weights(model: MultiExitNetwork, config: TrainConfig) -> torch.Tensor:
    weights = config.exit_weights if config.exit_weights is not None else [1.0] * model.num_exits
    if len(weights) != model.num_exits or any(not (w >= 0 and math.isfinite(w)) for w in weights):
        raise ValueError(f"exit_weights must be {model.num_exits} finite values >= 0, got {list(weights)}")
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
    for p in model.backbone_parameters():
        p.requires_grad_(False)
    return model.branch_parameters()


def _set_train_mode(model: MultiExitNetwork, config: TrainConfig) -> None:
    model.train()
    if config.freeze_backbone:
        model.blocks.eval()  # frozen BN statistics too


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


@torch.no_grad()
def evaluate(model: MultiExitNetwork, dataset: ImageDataset, batch_size: int = 500) -> list[float]:
    """Per-exit accuracy on a dataset (no augmentation), on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    augment, dataset.augment = dataset.augment, False
    correct = torch.zeros(model.num_exits)
    try:
        for images, labels in dataset.batches(batch_size):
            for i, logits in enumerate(model(images.to(device))):
                correct[i] += (logits.argmax(1) == labels.to(device)).sum().cpu()
    finally:
        dataset.augment = augment
    return (correct / len(dataset)).tolist()


def train(model: MultiExitNetwork, train_set: ImageDataset, test_set: ImageDataset | None = None,
          config: TrainConfig | None = None, checkpoint: str | os.PathLike[str] | None = None,
          model_spec: dict[str, Any] | None = None, progress: bool = True) -> History:
    """Train every exit with the weighted sum of their cross-entropies; resume from `checkpoint` if present.

    `model_spec` (e.g. ``{"name": "b_alexnet", "width": 0.5, ...}``) is stored in the
    checkpoint so that :func:`load_checkpoint` can rebuild the model.
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    weights = exit_weights(model, config).to(config.device)
    model.to(config.device)
    optimizer = _optimizer(_trainable(model, config), config)
    steps = math.ceil(len(train_set) / config.batch_size)
    scheduler = _scheduler(optimizer, config, steps)
    history, first_epoch = History(), 0
    path = Path(checkpoint) if checkpoint else None
    if path and path.exists():
        state = _read(path)
        stored = {k: state.get("config", {}).get(k, "joint" if k == "recipe" else None)
                  for k in ("epochs", "batch_size", "schedule", "lr", "recipe")}
        wanted = {k: getattr(config, k) for k in stored}
        if stored != wanted:
            raise ValueError(f"{path} was trained with {stored}; resume it with the same settings, not {wanted}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # dropout draws from the global generator
        history = History(**state["history"])
        first_epoch = len(history.loss)
    for epoch in range(first_epoch, config.epochs):
        started = time.perf_counter()
        _set_train_mode(model, config)
        total, seen = torch.zeros((), device=config.device), 0
        correct = torch.zeros(model.num_exits, device=config.device)
        bar = tqdm(train_set.batches(config.batch_size, shuffle=True, generator=generator), total=steps,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for images, labels in bar:
            images = images.to(config.device, non_blocking=True)
            labels = labels.to(config.device, non_blocking=True)
            outputs = model(images)
            loss = (exit_losses(outputs, labels, config) * weights).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(labels)
            with torch.no_grad():
                total += loss.detach() * len(labels)  # kept on the device: no sync per step
                for i, logits in enumerate(outputs):
                    correct[i] += (logits.argmax(1) == labels).sum()
            if progress and bar.n % 10 == 0:
                bar.set_postfix(loss=f"{float(total) / seen:.3f}",
                                acc=" ".join(f"{100 * c / seen:.0f}" for c in correct.tolist()))
        history.loss.append(float(total) / seen)
        history.test_accuracy.append(evaluate(model, test_set) if test_set is not None else [])
        history.seconds.append(time.perf_counter() - started)
        if progress:
            accuracy = " ".join(f"{100 * a:.1f}" for a in history.test_accuracy[-1])
            tqdm.write(f"epoch {epoch + 1}: loss {history.loss[-1]:.3f}, test accuracy per exit [{accuracy}], "
                       f"{history.seconds[-1]:.0f} s")
        if path:
            save_checkpoint(path, model, model_spec, optimizer=optimizer, scheduler=scheduler, generator=generator,
                            torch_rng=torch.get_rng_state(), history=history, config=config)
    return history


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, model_spec: dict[str, Any] | None = None,
                    **extra: Any) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"version": CHECKPOINT_VERSION, "model": model.state_dict(), "spec": model_spec or {}}
    for key, value in extra.items():
        if isinstance(value, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)):
            state[key] = value.state_dict()
        elif isinstance(value, torch.Generator):
            state[key] = value.get_state()
        elif isinstance(value, (History, TrainConfig)):
            state[key] = asdict(value)
        else:
            state[key] = value
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise ValueError(f"{path} is not a readable einet checkpoint: {error}") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model" not in state:
        raise ValueError(f"{path} is not an einet checkpoint of version {CHECKPOINT_VERSION}")
    return state


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[MultiExitNetwork, dict[str, Any]]:
    """Rebuild a zoo model from a checkpoint written by :func:`train`; returns (model, checkpoint)."""
    from .zoo import build

    state = _read(Path(path))
    spec = dict(state["spec"])
    if "name" not in spec:
        raise ValueError(f"{path} does not say which model it holds (no spec name)")
    name = spec.pop("name")
    model = build(name, **spec)
    model.load_state_dict(state["model"])
    return model.eval(), state
