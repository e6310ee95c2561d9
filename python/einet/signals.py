"""Per-exit signals a predictor or a reference policy may read, from an exit's log-probabilities.

- ``confidence``: the max softmax probability (what the paper's predictor reads);
- ``entropy``: the softmax entropy over log(classes), in [0, 1];
- ``margin``: the top-1 minus top-2 probability.

Numpy only; computed the same way offline (CS-profiles) and online (the runtime's log-probabilities).
"""

from __future__ import annotations

import numpy as np

SIGNALS = ("confidence", "entropy", "margin")


def exit_signals(log_probs: np.ndarray) -> np.ndarray:
    """[..., 3] signals (in SIGNALS order) from log-probabilities [..., C]."""
    probabilities = np.exp(log_probs.astype(np.float32))
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    entropy = -(probabilities * log_probs).sum(-1) / np.log(log_probs.shape[-1])
    return np.stack([top2[..., 1], entropy, top2[..., 1] - top2[..., 0]], axis=-1)


def signal_index(signal: str) -> int:
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}: expected one of {', '.join(SIGNALS)}")
    return SIGNALS.index(signal)
