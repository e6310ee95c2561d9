"""A network's variants: what a bundle builds on its checkpoint's network (a thumbnail exit in front, a
second look through some of its blocks), and which exits of the largest variant each smaller one runs,
so that one profile of the largest serves every candidate (``einet build``). Numpy only until built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EinetValueError


@dataclass(frozen=True)
class Variant:
    """What a bundle builds on its checkpoint's network: a thumbnail exit in front (its side), a second
    look (view and blocks per pass). Exits of the full variant a candidate keeps: :func:`variant_exits`."""

    thumbnail: int | None = None
    second_look: str | None = None
    depth: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"thumbnail": self.thumbnail, "second_look": self.second_look, "depth": self.depth}

    def label(self, blocks: int) -> str:
        parts = [f"thumbnail exit ({self.thumbnail}x{self.thumbnail})"] if self.thumbnail else []
        if self.second_look:
            depth = self.depth or blocks
            parts.append(f"second look ({self.second_look}" + (f", {depth} of {blocks} blocks)" if depth < blocks
                                                                else ")"))
        return " + ".join(parts) or "the network"

    def build(self, model: Any, thumbnail: Any = None) -> Any:
        """The variant of `model` (a MultiExitNetwork), with `thumbnail` (a ThumbnailClassifier) if it has one."""
        from .models.second_look import with_second_look
        from .models.thumbnail import with_thumbnail_exit

        if self.second_look:
            model = with_second_look(model, self.second_look, self.depth)
        if self.thumbnail:
            model = with_thumbnail_exit(model, thumbnail)
        return model


def variant_exits(blocks: int, full: Variant, candidate: Variant) -> np.ndarray:
    """The exits of the `full` variant (the largest one profiled) that `candidate` runs, in order: its
    profiles are the full one's cut to them (a depth-d second look runs passes 0..d-1 of each)."""
    if (candidate.thumbnail and not full.thumbnail) or (candidate.second_look and not full.second_look):
        raise EinetValueError(f"{candidate} is not a part of {full}")
    offset = 1 if full.thumbnail else 0
    depth = candidate.depth or blocks
    kept = [0] if candidate.thumbnail else []
    kept += [offset + i for i in range(depth if candidate.second_look else blocks)]
    if candidate.second_look:
        kept += [offset + blocks + i for i in range(depth)]
    return np.asarray(kept, dtype=np.int64)


def load_variant(checkpoint: Any, variant: Variant, constructor: Any = None,
                 form: Any = None) -> tuple[Any, dict[str, Any]]:
    """`variant` of the network in a checkpoint (its thumbnail exit's weights from the same file), in
    eval mode, and the checkpoint; ValueError when the file holds no thumbnail exit of the right shapes.
    `form` (an :class:`einet.models.inference.InferenceForm`): the base network's inference form."""
    from .formats.checkpoint import load_checkpoint
    from .models.thumbnail import ThumbnailClassifier

    model, state = load_checkpoint(checkpoint, constructor=constructor)
    if form is not None:
        model = form.apply(model)
    thumbnail = None
    if variant.thumbnail:
        spec = state["spec"]
        channels = spec.get("in_channels", (spec.get("input_shape") or [0])[0])
        thumbnail = ThumbnailClassifier(channels, spec["num_classes"], variant.thumbnail)
        expected = {key: tuple(value.shape) for key, value in thumbnail.state_dict().items()}
        stored = state.get("thumbnail")
        if not isinstance(stored, dict) or {key: tuple(getattr(value, "shape", ())) for key, value
                                            in stored.items()} != expected:
            raise EinetValueError(f"{checkpoint}: no thumbnail exit of the shapes {expected}")
        thumbnail.load_state_dict(stored)
    return variant.build(model, thumbnail).eval(), state
