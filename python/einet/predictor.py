"""The confidence-score predictor: from the exits observed so far, every exit's score.

Input: the observed confidences (0 where not observed) and the observation
mask; output: a score per exit. Two targets:

- ``confidence`` (the paper): regress each exit's confidence (max softmax) with MSE.
- ``correctness`` (ours): predict the probability that each exit is right with
  BCE. That is exactly the s_i the planner's objective asks for, and it is
  calibrated on held-out data, where raw softmax confidence is over-confident.

Training data come from the CS-profile of a held-out split (never the test
split), with random observation masks that mimic online states: a prefix of
blocks has run and a random subset of its branches was executed. The trained
weights export to the native core (:class:`einet.NativePredictor`), where one
call predicts and plans. Needs torch (``einet[torch]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .planner import NativePredictor
from .profiling import CSProfile, ProfileFormatError, read_arrays, write_arrays

TARGETS = ("confidence", "correctness")


class ConfidencePredictor(nn.Module):
    """An MLP [observed scores, mask] -> every exit's score (ReLU hidden layers, sigmoid output)."""

    def __init__(self, num_exits: int, hidden: Sequence[int] = (64, 64), target: str = "correctness") -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}: expected 'confidence' or 'correctness'")
        if num_exits < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"need num_exits >= 1 and hidden sizes >= 1, got {num_exits} and {list(hidden)}")
        self.num_exits = num_exits
        self.target = target
        self.hidden = tuple(hidden)
        sizes = [2 * num_exits, *hidden, num_exits]
        layers: list[nn.Module] = []
        for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if k < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.mlp = nn.Sequential(*layers)

    @property
    def calibrated(self) -> bool:
        return self.target == "correctness"

    def logits(self, observed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(observed.dtype)
        return self.mlp(torch.cat([observed * mask, mask], dim=-1))

    def forward(self, observed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1]; for the confidence target, observed exits keep their observed value."""
        scores = torch.sigmoid(self.logits(observed, mask))
        if not self.calibrated:
            scores = torch.where(mask.bool(), observed, scores)
        return scores

    def export(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(weights, biases) of every dense layer, as float64 arrays in torch's [out, in] layout."""
        linears = [m for m in self.mlp if isinstance(m, nn.Linear)]
        return ([m.weight.detach().double().cpu().numpy() for m in linears],
                [m.bias.detach().double().cpu().numpy() for m in linears])

    def to_native(self) -> NativePredictor:
        weights, biases = self.export()
        return NativePredictor(weights, biases, self.calibrated)


def random_observations(num_samples: int, num_exits: int, rng: np.random.Generator) -> np.ndarray:
    """Observation masks like the runtime's: blocks 0..m-1 have run (m uniform in 0..N-1) and each of
    their branches ran with a per-sample probability drawn uniformly."""
    prefix = rng.integers(0, num_exits, num_samples)
    rate = rng.random(num_samples)
    inside = np.arange(num_exits)[None, :] < prefix[:, None]
    return inside & (rng.random((num_samples, num_exits)) < rate[:, None])


@dataclass
class FitReport:
    """Training loss per epoch."""

    loss: list[float]


def fit_predictor(profile: CSProfile, target: str = "correctness", hidden: Sequence[int] = (64, 64),
                  epochs: int = 40, batch_size: int = 256, lr: float = 2e-3, seed: int = 0,
                  progress: bool = True) -> tuple[ConfidencePredictor, FitReport]:
    """Train a predictor on a (held-out) CS-profile with fresh random observation masks every epoch."""
    from tqdm.auto import tqdm

    if profile.meta.get("split") == "test":
        raise ValueError("refusing to fit the predictor on a test-split CS-profile: use a held-out split")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ConfidencePredictor(profile.num_exits, hidden, target)
    confidence = torch.from_numpy(profile.confidence.astype(np.float32))
    goal = torch.from_numpy((profile.correct if target == "correctness" else profile.confidence).astype(np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    losses = []
    for _ in tqdm(range(epochs), desc=f"predictor ({target})", disable=not progress, leave=False):
        masks = torch.from_numpy(random_observations(profile.num_samples, profile.num_exits, rng))
        order = torch.from_numpy(rng.permutation(profile.num_samples))
        total = 0.0
        for first in range(0, profile.num_samples, batch_size):
            index = order[first:first + batch_size]
            logits = model.logits(confidence[index], masks[index])
            if target == "correctness":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, goal[index])
            else:
                loss = nn.functional.mse_loss(torch.sigmoid(logits), goal[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        scheduler.step()
        losses.append(total / profile.num_samples)
    return model.eval(), FitReport(losses)


def save_predictor(path: str | os.PathLike[str], model: ConfidencePredictor) -> Path:
    """Write the predictor's weights in einet's file format (no pickle)."""
    weights, biases = model.export()
    arrays = {f"weight{k}": w for k, w in enumerate(weights)} | {f"bias{k}": b for k, b in enumerate(biases)}
    meta = {"target": model.target, "hidden": list(model.hidden), "num_exits": model.num_exits,
            "layers": len(weights)}
    return write_arrays(path, "predictor", arrays, meta)


def load_predictor(path: str | os.PathLike[str]) -> ConfidencePredictor:
    """A torch predictor from a file written by :func:`save_predictor` (schema-checked)."""
    arrays, meta = read_arrays(path, "predictor")
    try:
        model = ConfidencePredictor(int(meta["num_exits"]), [int(h) for h in meta["hidden"]], str(meta["target"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ProfileFormatError(f"{path}: bad predictor header {meta}: {error}") from None
    linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
    state = {}
    for k, layer in enumerate(linears):
        for name, param in (("weight", layer.weight), ("bias", layer.bias)):
            array = arrays.get(f"{name}{k}")
            if array is None or array.shape != tuple(param.shape):
                got = None if array is None else array.shape
                raise ProfileFormatError(f"{path}: {name}{k} must have shape {tuple(param.shape)}, got {got}")
            state[f"{name}{k}"] = array
    with torch.no_grad():
        for k, layer in enumerate(linears):
            layer.weight.copy_(torch.from_numpy(state[f"weight{k}"]))
            layer.bias.copy_(torch.from_numpy(state[f"bias{k}"]))
    return model.eval()


def predict_numpy(model: ConfidencePredictor, observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scores for a batch of observation states, through torch."""
    with torch.no_grad():
        return model(torch.from_numpy(observed.astype(np.float32)), torch.from_numpy(mask)).double().numpy()


def expected_calibration_error(probability: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-weighted gap between predicted probability and observed accuracy."""
    probability, correct = probability.ravel(), correct.ravel().astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            error += chosen.mean() * abs(probability[chosen].mean() - correct[chosen].mean())
    return float(error)
