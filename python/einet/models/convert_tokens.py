"""What the converter (:mod:`einet.models.convert`) needs for transformers: networks whose blocks pass
tokens [batch, tokens, dim] from one to the next.

timm's ViT / DeiT layout: a patch embedding, a class (and distillation) token and a position
embedding, then ``blocks`` (an ``nn.Sequential``, or an ``nn.ModuleList`` run in order) of attention
and MLP blocks, a norm and a head reading the class token or the mean of the tokens. The converter
cuts after each such block where a single token tensor is live; each cut but the last gets a
:class:`TokenBranch`, and the part after the last block (norm, pooling, head) stays the final exit.
"""

from __future__ import annotations

import operator
from typing import cast

import torch
from torch import fx, nn

from ..errors import EinetValueError

TOKEN_POOLINGS = ("class", "mean")


class TokenBranch(nn.Module):
    """An exit for tokens: a layer norm, the model's own pooling, one linear layer (a ViT's head).

    ``pooling`` is "class" (the first token, where a ViT keeps its class token) or "mean" (the mean of
    all tokens): the converter picks the one the model's own head uses (:func:`token_pooling`).
    """

    def __init__(self, dim: int, num_classes: int, pooling: str = "class") -> None:
        super().__init__()
        if pooling not in TOKEN_POOLINGS:
            raise EinetValueError(f"a token exit's pooling must be one of {', '.join(TOKEN_POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.norm(h)
        pooled = h[:, 0] if self.pooling == "class" else h.mean(dim=1)
        return cast(torch.Tensor, self.head(pooled))


def block_sequences(model: nn.Module) -> dict[str, list[str]]:
    """The ``nn.Sequential`` and ``nn.ModuleList`` containers of `model` with two children or more, each
    with its children's qualified names: the blocks a cut may follow ("" is the model itself)."""
    return {name: [f"{name}.{child}" if name else child for child, _ in container.named_children()]
            for name, container in model.named_modules()
            if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container) >= 2}


def block_ends(nodes: list[fx.Node], blocks: set[str]) -> list[int]:
    """For each of `blocks` (qualified module names) that runs in the graph, the index in `nodes` of its
    last node (read from the module stack torch.fx records while tracing), in order."""
    last: dict[str, int] = {}
    for k, node in enumerate(nodes):
        for name, _ in node.meta.get("nn_module_stack", {}).values():
            if name in blocks:
                last[name] = k
    return sorted(set(last.values()))


def token_pooling(pooled: fx.Node | None) -> str:
    """The pooling of the model's own head, from `pooled`, the first node after the last block that holds
    one vector per image: "class" where that is the first token (``x[:, 0]``), else "mean"."""
    is_first_token = (pooled is not None and pooled.op == "call_function" and pooled.target is operator.getitem
                      and pooled.args[1] == (slice(None), 0))
    return "class" if is_first_token else "mean"
