"""Shared fixtures for tests/ and benchmarks/."""

import pytest

from einet.synthetic import exit_distribution, random_problem


@pytest.fixture
def make_instance():
    """random_problem(rng, num_blocks, kind): a synthetic planning problem."""
    return random_problem


@pytest.fixture
def make_distribution():
    """exit_distribution(kind, total, rng): an exit-time distribution scaled to a model."""
    return exit_distribution


def pytest_addoption(parser):
    parser.addoption("--update-results", action="store_true",
                     help="benchmarks rewrite their committed result tables (benchmarks/results); never by default")
