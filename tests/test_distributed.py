"""Training across processes: torchrun with two CPU processes (gloo), each a shard of the data, rank 0
writing the checkpoint and the summary (which records the world size)."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from einet.formats.checkpoint import load_checkpoint  # noqa: E402

# Run by torchrun in each process: DDP through the API (recording which samples each process draws),
# then `einet train` in the same process group.
WORKER = '''
import json, os, sys
import numpy as np
import torch
from torch.utils.data import Dataset

from einet import cli
from einet.data import ImageArrays, ImageDataset
from einet.models import build
from einet.training import TrainConfig, train
from einet.training.distributed import init_distributed

folder, data = sys.argv[1], sys.argv[2]
rank, world, device = init_distributed("cpu")
assert (rank, world, device) == (int(os.environ["RANK"]), 2, "cpu")


class Recording(Dataset):
    def __init__(self, data):
        self.data, self.seen = data, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.seen.append(int(i))
        return self.data[i]


rng = np.random.default_rng(0)
labels = np.arange(40) % 2
images = rng.integers(0, 40, (40, 8, 8, 1), dtype=np.uint8)
images[labels == 0, :4] += 200
source = Recording(ImageDataset(ImageArrays(images, labels, ("top", "dark"))))
torch.manual_seed(0)
model = build("b_alexnet", num_classes=2, in_channels=1, width=0.125)
history = train(model, source, source.data, TrainConfig(epochs=2, batch_size=8, seed=4), progress=False,
                checkpoint=os.path.join(folder, "api.pt"), model_spec={"name": "b_alexnet", "num_classes": 2,
                                                                        "in_channels": 1, "width": 0.125})
torch.save({"seen": source.seen, "state": model.state_dict(), "loss": history.loss,
            "accuracy": history.test_accuracy}, os.path.join(folder, f"rank{rank}.pt"))
status = cli.main(["train", "--dataset", "mnist", "--data", data, "--model", "b_alexnet", "--width", "0.125",
                   "--epochs", "2", "--batch-size", "16", "--threads", "1", "--device", "cpu", "--quiet",
                   "--out", os.path.join(folder, "cli.pt")])
sys.exit(status)
'''


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def tiny_mnist(root: Path) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for prefix, count in (("train", 100), ("t10k", 40)):
        labels = np.arange(count) % 3
        images = rng.integers(0, 40, (count, 12, 12), dtype=np.uint8)
        images[labels == 0, :6] += 200
        images[labels == 1, :, :6] += 200
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    data = tiny_mnist(tmp_path / "mnist")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path), str(data)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    # API: each process drew its own half of every epoch's one order; both ended with the same weights.
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for epoch in range(2):
        shards = [set(r["seen"][epoch * 20:(epoch + 1) * 20]) for r in ranks]
        assert len(shards[0]) == len(shards[1]) == 20 and shards[0] | shards[1] == set(range(40))
    assert ranks[0]["seen"][:20] != ranks[0]["seen"][20:40]  # reshuffled each epoch
    assert all(torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) for k in ranks[0]["state"])
    assert ranks[0]["loss"] == ranks[1]["loss"] and ranks[0]["accuracy"] == ranks[1]["accuracy"]
    api, state = load_checkpoint(tmp_path / "api.pt")
    assert state["world_size"] == 2
    assert all(torch.equal(api.state_dict()[k], ranks[0]["state"][k]) for k in ranks[0]["state"])
    # CLI: rank 0 alone wrote the summary (printed once) and it records the world size.
    summary = json.loads((tmp_path / "cli.summary.json").read_text())
    assert summary["world_size"] == 2 and summary["batch_size"] == 16 and len(summary["test_accuracy_per_exit"]) == 3
    assert run.stdout.count('"world_size": 2') == 1
    _, state = load_checkpoint(tmp_path / "cli.pt")
    assert len(state["history"]["loss"]) == 2 and state["world_size"] == 2


def test_batch_size_is_global_and_loaders_must_be_sharded(monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    import einet.training.loop as training
    from einet.models import build
    from einet.training import TrainConfig, train

    monkeypatch.setattr(training, "world", lambda: (0, 2))
    model = build("b_alexnet", num_classes=2, in_channels=1, width=0.125)
    data = TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="batch_size 7 is the global batch"):
        train(model, data, None, TrainConfig(batch_size=7), progress=False)
    with pytest.raises(ValueError, match="DistributedSampler"):
        train(model, DataLoader(data, batch_size=2), None, TrainConfig(batch_size=4), progress=False)


def test_init_distributed_without_torchrun_is_a_single_process(monkeypatch):
    from einet.training.distributed import finish_distributed, init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == (0, 1, "cpu")
    finish_distributed()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("count", [40, 44])
def test_shards_of_a_global_batch_are_that_batch_augmented_alike(count):
    """K processes with batch B / K see exactly the samples, and the augmentations, of one process with batch B."""
    from einet.data import ImageArrays, ImageDataset, as_batches

    rng = np.random.default_rng(0)
    data = ImageDataset(ImageArrays(rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8), np.arange(count) % 2,
                                    ("a", "b")), augment=True)
    one = list(as_batches(data, 8, shuffle=True, generator=torch.Generator().manual_seed(3)))
    generators = [torch.Generator().manual_seed(3) for _ in range(2)]
    shards = [list(as_batches(data, 4, shuffle=True, generator=generators[r], rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == len(shards[0]) == len(shards[1])
    for k, (images, labels) in enumerate(one):
        merged, merged_labels = torch.empty_like(images), torch.empty_like(labels)
        merged[0::2], merged[1::2] = shards[0][k][0], shards[1][k][0]
        merged_labels[0::2], merged_labels[1::2] = shards[0][k][1], shards[1][k][1]
        assert torch.equal(merged, images) and torch.equal(merged_labels, labels)
    assert torch.equal(generators[0].get_state(), generators[1].get_state())
