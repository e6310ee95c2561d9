"""Test helpers: tiny synthetic datasets in the formats einet reads."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def fake_cifar10(root: Path, per_batch: int = 8) -> Path:
    """CIFAR-10 python batches: 5 x `per_batch` training images, `per_batch` test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(k) for k in rng.integers(0, 10, per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return root




def tiny_bundle(folder: Path, name: str, profile: str = "") -> Path:
    """`einet build` of the embedded MNIST slice, one epoch of a tiny B-AlexNet, no levers: a bundle in seconds
    (`profile`: more lines of its [profile] section, e.g. 'compile = true'). The bundle's path."""
    from importlib.resources import files

    from einet.cli import main

    (folder / "c.toml").write_text(
        f'name = "{name}"\n[data]\ndataset = "mnist"\npath = "{files("einet") / "resources"}"\nholdout = 0.2\n'
        '[network]\nzoo = "b_alexnet"\nwidth = 0.125\nexit_head = "light"\n[train]\nepochs = 1\nbatch_size = 64\n'
        f'[profile]\nrepeats = 10\nwarmup = 2\n{profile}[select]\npredictor_epochs = 2\nrules = ["latest"]\n'
        f'[output]\nbundle = "{name}.einet"\n')
    assert main(["build", str(folder / "c.toml"), "--quiet"]) == 0
    return folder / f"{name}.einet"
