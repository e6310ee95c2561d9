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
from typing import cast

import numpy as np
import torch
from torch import nn

from .errors import EinetValueError
from .formats.predictor_file import TARGETS, check_predictor_size, read_predictor, write_predictor
from .formats.profiles import CSProfile
from .planner import NativePredictor
from .rules import AnswerRule, as_rule, ensemble_prefix_correct
from .signals import agreement, check_signal, exit_signals, signal_index


class ConfidencePredictor(nn.Module):
    """An MLP [observed scores, mask] -> every exit's score (ReLU hidden layers, sigmoid output)."""

    def __init__(self, num_exits: int, hidden: Sequence[int] = (64, 64), target: str = "correctness",
                 rule: AnswerRule | None = None, signal: str = "confidence") -> None:
        super().__init__()
        # The output rule it scores for: under ``ensemble`` its inputs and targets are the ensemble's,
        # and the rule's weights and time-zero answer travel with the predictor file.
        self.rule = rule or AnswerRule()
        if target not in TARGETS:
            raise EinetValueError(f"unknown target {target!r}: expected 'confidence' or 'correctness'")
        check_signal(signal, self.rule.name, target)
        self.signal = signal  # what it reads per observed exit (einet.signals)
        check_predictor_size(num_exits, hidden)  # the bounds its file must meet, before anything is allocated
        sizes = [2 * num_exits, *hidden, num_exits]
        self.num_exits = num_exits
        self.target = target
        self.hidden = tuple(hidden)
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
        return cast(torch.Tensor, self.mlp(torch.cat([observed * mask, mask], dim=-1)))

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
                  progress: bool = True, rule: str | AnswerRule = "latest",
                  signal: str = "confidence") -> tuple[ConfidencePredictor, FitReport]:
    """Train a predictor on a (held-out) CS-profile with fresh random observation masks every epoch.

    Under rule ``ensemble`` the predictor learns what the planner needs there: its inputs are the
    ensemble's confidences after each observed branch (what the runtime observes), and exit i's
    target is whether the ensemble of the observed exits before i plus exit i is right. The
    planner thus scores each future exit as if it were the next branch to run: the branches a
    plan runs in between are not credited (an approximation; the simulator scores the truth)."""
    from tqdm.auto import tqdm

    if profile.meta.get("split") == "test":
        raise EinetValueError("refusing to fit the predictor on a test-split CS-profile: use a held-out split")
    if epochs < 1 or batch_size < 1:
        raise EinetValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rule = as_rule(rule)
    model = ConfidencePredictor(profile.num_exits, hidden, target, rule, signal)
    log_probs = profile.dense_log_probs() if rule.name == "ensemble" else None
    observed = (exit_signals(profile.dense_log_probs())[..., signal_index(signal)]
                if signal in ("entropy", "margin") else profile.confidence)

    def examples(masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(observed signals, targets) for these observation masks."""
        if log_probs is None:
            correct = profile.correct
            confidence = agreement(profile.prediction, masks) if signal == "agreement" else observed
        else:
            weights = cast("tuple[float, ...]", rule.weights)  # rule ensemble: AnswerRule ensures weights
            correct, confidence = ensemble_prefix_correct(log_probs, profile.labels, weights, masks)
        goal = correct if target == "correctness" else confidence
        return torch.from_numpy(confidence.astype(np.float32)), torch.from_numpy(goal.astype(np.float32))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    losses = []
    for _ in tqdm(range(epochs), desc=f"predictor ({target})", disable=not progress, leave=False):
        drawn = random_observations(profile.num_samples, profile.num_exits, rng)
        confidence, goal = examples(drawn)
        masks = torch.from_numpy(drawn)
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
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(loss.detach()) * len(index)
        scheduler.step()
        losses.append(total / profile.num_samples)
    return model.eval(), FitReport(losses)


def fit_ensemble_weights(profile: CSProfile, steps: int = 300, lr: float = 0.05, seed: int = 0) -> tuple[float, ...]:
    """Per-exit weights for rule ``ensemble``, fitted on a held-out CS-profile: they minimise the
    cross-entropy of every prefix ensemble (exits 0..q, for every q), so early and late answers
    both count. Each prefix gets its own temperature in the fit, so that the weights decide how
    much each exit's vote counts and not how sharp the ensemble is (the held class does not
    depend on a common scale). Weights are softplus-parametrised (>= 0) and start equal."""
    if profile.meta.get("split") == "test":
        raise EinetValueError("refusing to fit ensemble weights on a test-split CS-profile: use a held-out split")
    torch.manual_seed(seed)
    log_probs = torch.from_numpy(profile.dense_log_probs())  # [S, N, C]
    labels = torch.from_numpy(profile.labels)
    raw = torch.full((profile.num_exits,), float(np.log(np.e - 1)), requires_grad=True)  # softplus(raw) = 1
    log_temperature = torch.zeros(profile.num_exits, requires_grad=True)  # one per prefix: fitted, then dropped
    optimizer = torch.optim.Adam([raw, log_temperature], lr=lr)
    for _ in range(steps):
        weights = nn.functional.softplus(raw)
        prefix = torch.cumsum(log_probs * weights[None, :, None], dim=1) * torch.exp(-log_temperature)[None, :, None]
        loss = nn.functional.cross_entropy(prefix.reshape(-1, prefix.shape[2]),
                                           labels.repeat_interleave(profile.num_exits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return tuple(float(w) for w in nn.functional.softplus(raw).detach())


def save_predictor(path: str | os.PathLike[str], model: ConfidencePredictor) -> Path:
    """Write the predictor's weights in einet's file format (no pickle)."""
    return write_predictor(path, model)


def load_predictor(path: str | os.PathLike[str]) -> ConfidencePredictor:
    """A torch predictor from a file written by :func:`save_predictor` (checked first:
    :func:`einet.formats.predictor_file.read_predictor`)."""
    checked = read_predictor(path)
    model = ConfidencePredictor(checked.num_exits, checked.hidden, checked.target, checked.rule, checked.signal)
    linears = [m for m in model.mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, (weight, bias) in zip(linears, checked.layers):
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
    return model.eval()


def predict_numpy(model: ConfidencePredictor, observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scores for a batch of observation states, through torch."""
    with torch.no_grad():
        scores: torch.Tensor = model(torch.from_numpy(observed.astype(np.float32)), torch.from_numpy(mask))
        return scores.double().numpy()


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
