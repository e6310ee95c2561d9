"""Whether a partial training may be resumed: the same settings (what it learns, not how fast), model,
held-out split and network shape as the run that wrote it; otherwise why not, in words."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..formats.checkpoint import read_checkpoint
from ..models.base import MultiExitNetwork

if TYPE_CHECKING:
    from .loop import TrainConfig


def comparable(value: object) -> Any:
    """A setting or a model spec as plain JSON, a spec without the keys that only repeat a default (the
    paper's exit head): what a resumed run must match."""
    if isinstance(value, Mapping):
        value = {key: item for key, item in value.items() if not (key == "exit_head" and item == "paper")}
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def resume_mismatch(path: str | os.PathLike[str], model: MultiExitNetwork, config: TrainConfig,
                    model_spec: Mapping[str, Any] | None = None, split: Mapping[str, Any] | None = None,
                    state: Mapping[str, Any] | None = None) -> str | None:
    """Why :func:`train` would not resume the partial training at `path` (`state`, if read already) with
    these arguments: unreadable, or of another run (settings, model, split, network shape); or None."""
    try:
        state = read_checkpoint(Path(path)) if state is None else state
    except ValueError as error:
        return f"is unreadable ({' '.join(str(error).split())})"
    done: dict[str, Any] = state.get("config") or {}  # (asdict of the TrainConfig it ran)
    was = {f.name: done.get(f.name, f.default) for f in dataclasses.fields(config)  # older files: the default
           if f.name not in ("threads", "device", "precision", "channels_last")  # how fast, not what it learns
           and comparable(done.get(f.name, f.default)) != comparable(getattr(config, f.name))}
    weights, wanted = state.get("model"), model.state_dict()
    if was:
        return f"was trained with {was}; resume it with the same settings, not { {k: getattr(config, k) for k in was} }"
    if model_spec is not None and comparable(state.get("spec")) != comparable(model_spec):
        return f"holds a checkpoint of another model ({state.get('spec')}, not {dict(model_spec)})"
    if split is not None and state.get("split") != dict(split):
        return f"was trained with another held-out split ({state.get('split')}, not {dict(split)})"
    if not (isinstance(weights, Mapping) and weights.keys() == wanted.keys()
            and all(getattr(weights[k], "shape", None) == v.shape for k, v in wanted.items())):
        return "holds the weights of a network of another shape"
    return None
