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


