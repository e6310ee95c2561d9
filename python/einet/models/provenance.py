"""What a checkpoint's network is, in words: the zoo model (or constructor), its width and the
recipe it was trained with, as profiles record it in their metadata and tables name their rows.
Everything that changes how the exits answer is part of the recipe (light exits, refitted pools,
an exit-weight schedule), so that two different networks never share a name."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from .base import DEFAULT_LIGHT_POOL, MultiExitNetwork, light_exits


def provenance(model: MultiExitNetwork, state: Mapping[str, Any]) -> dict[str, Any]:
    """{"zoo", "width", "recipe"[, "exit_weights"]} of a loaded checkpoint (`state`, as load_checkpoint returns it)."""
    spec = dict(state["spec"])
    config = state.get("config") or {}
    recipe = config.get("recipe", "joint")
    if spec.get("exit_head", "paper") != "paper":
        recipe += f", {spec['exit_head']} exits"
    if spec.get("exit_pools"):  # refitted exits (einet refit-exits) answer differently
        recipe += pools_label(model)
    described: dict[str, Any] = {"zoo": spec.get("constructor", spec.get("name")), "width": spec.get("width", 1.0)}
    if config.get("exit_weights"):
        runs = [(w, len(list(group))) for w, group in itertools.groupby(config["exit_weights"])]
        recipe += ", exit weights " + "/".join(f"{w:g}" + (f"x{n}" if n > 1 else "") for w, n in runs)
        described["exit_weights"] = list(config["exit_weights"])
    described["recipe"] = recipe
    return described


def pools_label(model: MultiExitNetwork) -> str:
    """E.g. ", exits 1-4 pooled 8x8": the light exits whose pool is not the light head's default."""
    changed = [(i + 1, model.exits[i].pool) for i in light_exits(model) if model.exits[i].pool != DEFAULT_LIGHT_POOL]
    parts = []
    for pool, group in itertools.groupby(changed, key=lambda item: item[1]):
        numbers = [i for i, _ in group]
        exits = f"{numbers[0]}-{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) and \
            len(numbers) > 1 else ", ".join(map(str, numbers))
        parts.append(f", exit{'s' if len(numbers) > 1 else ''} {exits} pooled {pool}x{pool}")
    return "".join(parts)
