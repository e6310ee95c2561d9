"""Per-exit signals a predictor or a reference policy may read, from an exit's log-probabilities.

- ``confidence``: the max softmax probability (what the paper's predictor reads);
- ``entropy``: the softmax entropy over log(classes), in [0, 1];
- ``margin``: the top-1 minus top-2 probability;
- ``agreement``: 1 when the exit's class equals the previous *observed* exit's, else 0 (0 for
  the first): it depends on which exits ran, so it is computed per observation state.

Numpy only; computed the same way offline (CS-profiles) and online (the runtime's log-probabilities).
"""

from __future__ import annotations

import numpy as np

from .errors import EinetTypeError, EinetValueError

SIGNALS = ("confidence", "entropy", "margin", "agreement")


def check_signal(signal: object, rule: str, target: str) -> None:
    """The one rule of which signals a predictor may read: any of SIGNALS under rules latest and
    best with the correctness target; only the confidence otherwise (under ensemble it reads the
    ensemble's confidence)."""
    if not isinstance(signal, str):
        raise EinetTypeError(f"signal must be a string, got {signal!r:.40}")
    signal_index(signal)
    if signal != "confidence" and (rule == "ensemble" or target != "correctness"):
        raise EinetValueError(f"signal {signal!r} goes with rules latest or best and the correctness target")


def exit_signals(log_probs: np.ndarray) -> np.ndarray:
    """[..., 3] per-exit signals (the first three of SIGNALS) from log-probabilities [..., C]."""
    probabilities = np.exp(log_probs.astype(np.float32))
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    entropy = -(probabilities * log_probs).sum(-1) / np.log(log_probs.shape[-1])
    return np.stack([top2[..., 1], entropy, top2[..., 1] - top2[..., 0]], axis=-1)


def signal_index(signal: str) -> int:
    """The native predictor's code of a signal name (its index in SIGNALS); ValueError for an unknown one."""
    if signal not in SIGNALS:
        raise EinetValueError(f"unknown signal {signal!r}: expected one of {', '.join(SIGNALS)}")
    return SIGNALS.index(signal)


def agreement(predictions: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[S, N]: does each exit's class equal that of the last observed exit before it (0 if none)?"""
    s_count, n = predictions.shape
    position = np.where(observed, np.arange(n)[None, :], -1)
    last_before = np.concatenate([np.full((s_count, 1), -1), np.maximum.accumulate(position, axis=1)[:, :-1]], 1)
    previous = np.take_along_axis(predictions, np.maximum(last_before, 0), 1)
    agrees: np.ndarray = ((last_before >= 0) & (previous == predictions)).astype(np.float32)
    return agrees
