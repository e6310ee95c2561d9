"""(images, labels) batches from any source einet trains, evaluates or profiles on (:func:`as_batches`):
an :class:`~einet.data.ImageDataset`, any map-style torch ``Dataset`` or a ``DataLoader``, checked as they come;
and the sharding of one order among processes (:func:`shard_indices`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Optional

from ..errors import EinetTypeError, EinetValueError
from .dataset import ImageDataset

if TYPE_CHECKING:
    import torch

ImageShape = tuple[Optional[int], Optional[int], Optional[int]]  # (channels, height, width); None: any


def shard_indices(size: int, shuffle: bool = False, generator: torch.Generator | None = None, rank: int = 0,
                  world_size: int = 1, pad: bool = True) -> torch.Tensor:
    """The sample indices process `rank` of `world_size` takes, as torch's DistributedSampler picks them:
    one order for all (``randperm`` from `generator`, which must be seeded alike in every process),
    padded by wrapping around to a multiple of `world_size` when `pad` (every process then runs the
    same number of steps), and every `world_size`-th index from `rank` on."""
    import torch

    if not 0 <= rank < world_size:
        raise EinetValueError(f"rank must be in [0, {world_size}), got {rank}")
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    if world_size == 1:
        return order
    if pad and size % world_size:
        extra = world_size - size % world_size
        order = torch.cat([order, order.repeat(-(-extra // max(size, 1)))[:extra]])
    return order[rank::world_size]


def _is_loader(source: object) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(source, DataLoader)


def loader_is_sharded(loader: object) -> bool:
    """Whether a DataLoader draws through a DistributedSampler (then each process sees its own shard)."""
    from torch.utils.data import DistributedSampler

    samplers = [getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    return any(isinstance(s, DistributedSampler) for s in samplers)


def _checked_batch(batch: object, where: str, sample: Callable[[int], str], num_classes: int | None,
                   expected_shape: ImageShape | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch as (images, int64 labels), checked so that bad data fails here, naming the sample
    (`sample(i)` names the batch's i-th), not as a wrong number or deep inside a convolution."""
    import torch

    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise EinetTypeError(f"{where} must yield (images, labels) batches, got a {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    if not isinstance(images, torch.Tensor):
        raise EinetTypeError(f"{where} yields images as {type(images).__name__}, not tensors: add a to-tensor "
                             "transform")
    _check_images(images, where, sample, expected_shape)
    if not bool(torch.isfinite(images).all()):  # one cheap pass per batch; the culprit is looked for only now
        first = int((~torch.isfinite(images)).flatten(1).any(1).byte().argmax())
        raise EinetValueError(f"{sample(first)} of {where} has non-finite pixel values")
    labels = _class_labels(labels, where, sample, num_classes)
    if labels.numel() != images.shape[0]:
        raise EinetValueError(f"{where} yields a batch of {images.shape[0]} images with {labels.numel()} labels")
    return images, labels


def _check_images(images: torch.Tensor, where: str, sample: Callable[[int], str],
                  expected_shape: ImageShape | None) -> None:
    """Floating-point [B, C, H, W] (of `expected_shape` [C, H, W] if given; None: any size there)."""
    if not images.is_floating_point():
        raise EinetTypeError(f"{where} yields images of dtype {images.dtype}: einet takes floating-point images "
                             f"(e.g. pixels / 255, normalised)")
    if images.dim() != 4:
        raise EinetValueError(f"{where} yields image batches of shape {tuple(images.shape)}, not "
                              f"[batch, channels, height, width]")
    if expected_shape is not None and not all(want is None or want == got
                                              for want, got in zip(expected_shape, images.shape[1:])):
        raise EinetValueError(f"{sample(0)} of {where} is an image of shape {tuple(images.shape[1:])}, but "
                              f"{tuple(expected_shape)} (channels, height, width) is expected")


def _class_labels(labels: object, where: str, sample: Callable[[int], str],
                  num_classes: int | None) -> torch.Tensor:
    """Labels as int64 class indices: integers (not floats, which would be truncated, nor booleans), >= 0 and
    below `num_classes` if given; else a ValueError naming the first bad one's sample."""
    import torch

    try:
        labels = torch.as_tensor(labels).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as error:
        raise EinetTypeError(f"{where} yields labels that are not numbers ({type(labels).__name__}): {error}") from None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        fractional = ~torch.isfinite(labels) | (labels != labels.round()) if labels.is_floating_point() else labels
        first = int(fractional.bool().byte().argmax())  # the first that is not a whole number, else the first
        raise EinetValueError(f"label {labels[first].item()} of {sample(first)} of {where} is not an integer class "
                              f"index (the labels are {labels.dtype})")
    outside = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        first = int(outside.byte().argmax())
        allowed = "negative" if num_classes is None else f"outside [0, {num_classes})"
        raise EinetValueError(f"label {labels[first].item()} of {sample(first)} of {where} is {allowed}")
    return labels.long()


def count_batches(source: object, batch_size: int, world_size: int = 1) -> int:
    """How many batches :func:`as_batches` yields per epoch in each process (a DataLoader: its length)."""
    if _is_loader(source):
        return len(source)  # type: ignore[arg-type]
    per_rank = -(-len(source) // world_size) if world_size > 1 else len(source)  # type: ignore[arg-type]
    return -(-per_rank // batch_size)


def as_batches(source: object, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
               *, augment: bool | None = None, rank: int = 0, world_size: int = 1, pad: bool = True,
               epoch: int | None = None, num_workers: int = 0, num_classes: int | None = None,
               expected_shape: ImageShape | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, int64 labels) batches from any source einet trains, evaluates or profiles on.

    - :class:`ImageDataset`: the fast in-memory path (its own batching and augmentation;
      `augment` overrides its flag, e.g. False for evaluation).
    - any map-style torch ``Dataset`` (``len`` and ``dataset[i] -> (image tensor, label)``): einet
      draws the order (shuffled with `generator`), fetches the items and collates them with torch's
      ``default_collate`` (through a DataLoader with `num_workers` workers). Its own transforms apply
      as they are: `augment` cannot switch them off, so evaluate on a dataset without random ones.
    - a ``DataLoader``: its batches as they come (its batch size, order, sampler and workers: the
      other arguments are ignored); if its sampler has ``set_epoch`` it is called with `epoch`.

    With ``world_size > 1`` the two dataset kinds are sharded like torch's DistributedSampler
    (:func:`shard_indices`): the same `generator` state in every process gives one order, and
    process `rank` takes its share (padded to equal shares when `pad`).

    Batches of a Dataset or DataLoader are checked as they come: images must be
    floating-point ``[B, C, H, W]`` tensors of finite values, labels integer class
    indices >= 0 (a float, NaN or boolean label is refused, not truncated). With
    `num_classes`, labels must also be below it; with `expected_shape` (channels,
    height, width), every image must have that shape. A bad batch raises a
    ValueError or TypeError naming the sample (its index in a Dataset, its place in
    the batch for a DataLoader). An ImageDataset is checked against `num_classes`
    and `expected_shape` once, up front.
    """
    if _is_loader(source):
        if epoch is not None:
            for sampler in (getattr(source, "sampler", None), getattr(getattr(source, "batch_sampler", None),
                                                                       "sampler", None)):
                if sampler is not None and hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
        return _loader_batches(source, num_classes, expected_shape)  # type: ignore[arg-type]
    if batch_size < 1:
        raise EinetValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(source, ImageDataset):
        _check_images(source.images, "the ImageDataset", _dataset_sample, expected_shape)
        _class_labels(source.labels, "the ImageDataset", _dataset_sample, num_classes)
        if world_size == 1:  # exactly the draws einet has always made
            return source.batches(batch_size, shuffle, generator, augment=augment)
        order = shard_indices(len(source), shuffle, generator, rank, world_size, pad)
        return source.batches(batch_size, generator=generator, augment=augment, order=order,
                              shard=(rank, world_size))
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise EinetTypeError(f"cannot draw batches from a {type(source).__name__}: expected an einet ImageDataset, a "
                             f"map-style torch Dataset (len and [i] -> (image tensor, label)) or a DataLoader")
    return _dataset_batches(source, batch_size, shard_indices(len(source), shuffle, generator, rank,
                                                              world_size, pad), num_workers, num_classes,
                            expected_shape)


def _dataset_sample(index: int) -> str:
    return f"sample {index}"


def _chunk_sample(chunk: list[int], position: int) -> str:
    return _dataset_sample(chunk[position])


def _loader_item(number: int, position: int) -> str:
    """A DataLoader's sample by its place: which dataset index it is, only its sampler knows."""
    return f"item {position} of batch {number}"


def _loader_batches(loader: Iterable[object], num_classes: int | None,
                    expected_shape: ImageShape | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for number, batch in enumerate(loader):
        yield _checked_batch(batch, "the DataLoader", partial(_loader_item, number), num_classes, expected_shape)


def _dataset_batches(dataset: object, batch_size: int, order: torch.Tensor, num_workers: int,
                     num_classes: int | None,
                     expected_shape: ImageShape | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    from torch.utils.data import DataLoader

    index = order.tolist()
    chunks = [index[first:first + batch_size] for first in range(0, len(index), batch_size)]
    # any map-style object (len and [i]) will do; torch's stub asks for a Dataset
    loader: DataLoader[object] = DataLoader(dataset, batch_sampler=chunks,  # type: ignore[arg-type]
                                            num_workers=num_workers)
    where = f"the {type(dataset).__name__}"
    for chunk, batch in zip(chunks, loader):  # a DataLoader yields its batches in its sampler's order
        yield _checked_batch(batch, where, partial(_chunk_sample, chunk), num_classes, expected_shape)
