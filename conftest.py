"""Shared fixtures for tests/ and benchmarks/: random planning instances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import einet

DISTRIBUTIONS = ("uniform", "normal", "exponential", "empirical", "deterministic")


def exit_distribution(kind: str, total: float, rng: np.random.Generator) -> einet.Distribution:
    """An exit-time distribution scaled to a model whose full inference takes `total` seconds."""
    if kind == "uniform":
        return einet.Uniform(0.0, total)
    if kind == "normal":
        return einet.Normal(total / 2, total / 4)
    if kind == "exponential":
        return einet.Exponential(2.0 / total)
    if kind == "empirical":
        return einet.Empirical(rng.uniform(0.0, total, 200))
    if kind == "deterministic":
        return einet.Deterministic(0.6 * total)
    raise ValueError(f"unknown distribution kind {kind!r}")


@dataclass
class Instance:
    scores: np.ndarray
    et: einet.ETProfile
    dist: einet.Distribution


def random_instance(rng: np.random.Generator, n: int, kind: str = "uniform") -> Instance:
    """Block times like a fine-grained CNN's, exit scores rising with depth plus noise."""
    conv = rng.uniform(0.2, 1.0, n)
    branch = rng.uniform(0.05, 0.6, n) * conv
    rising = np.sort(rng.uniform(0.1, 1.0, n))
    scores = np.clip(rising + rng.normal(0.0, 0.1, n), 0.0, 1.0)
    et = einet.ETProfile(conv, branch)
    return Instance(scores, et, exit_distribution(kind, et.total(), rng))


@pytest.fixture
def make_instance():
    return random_instance


@pytest.fixture
def make_distribution():
    return exit_distribution
