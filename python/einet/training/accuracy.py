"""Each exit's accuracy on a dataset, in one process or summed over the shards of several."""

from __future__ import annotations

from typing import Any

import torch

from ..data import as_batches
from ..errors import EinetValueError
from ..models.base import MultiExitNetwork
from .distributed import all_reduce


def shardable(source: Any) -> bool:
    """Whether einet can shard `source` across processes itself: a Dataset, not a DataLoader (which brings
    its own sampler)."""
    from torch.utils.data import DataLoader

    return not isinstance(source, DataLoader)



@torch.no_grad()
def _correct_counts(model: MultiExitNetwork, dataset: Any, batch_size: int, rank: int = 0,
                    world_size: int = 1) -> torch.Tensor:
    """[N + 1]: each exit's correct answers on this process's share of `dataset`, then the samples seen."""
    model.eval()
    device = next(model.parameters()).device
    counts = torch.zeros(model.num_exits + 1, dtype=torch.float64)
    for images, labels in as_batches(dataset, batch_size, augment=False, rank=rank, world_size=world_size, pad=False):
        labels = labels.to(device)
        for i, logits in enumerate(model(images.to(device))):
            counts[i] += float((logits.argmax(1) == labels).sum())
        counts[-1] += len(labels)
    return counts


def exit_accuracies(model: MultiExitNetwork, dataset: Any, batch_size: int = 500) -> list[float]:
    """Per-exit accuracy on a dataset (an ImageDataset without augmentation, a torch Dataset or a
    DataLoader: see :func:`einet.data.as_batches`), on the model's device."""
    counts = _correct_counts(model, dataset, batch_size)
    if counts[-1] == 0:
        raise EinetValueError("cannot evaluate on an empty dataset")
    return (counts[:-1] / counts[-1]).tolist()


def distributed_exit_accuracies(model: MultiExitNetwork, dataset: Any, batch_size: int, rank: int,
                          world_size: int) -> list[float]:
    """exit_accuracies() with every process scoring its shard of a dataset and the counts summed (a
    DataLoader, which cannot be sharded here, is scored whole by every process)."""
    if world_size == 1 or not shardable(dataset):
        return exit_accuracies(model, dataset, batch_size)
    counts = all_reduce(_correct_counts(model, dataset, batch_size, rank, world_size), model)
    return (counts[:-1] / counts[-1]).tolist()
