"""Pieces of the hand-written references (float64): a layer norm and a linear layer from a module's
weights, the poolings, and the worst difference of an encoder's output from a reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from service.engine.prefix import LoadedPrefix


def ln(x: torch.Tensor, mod: Any) -> torch.Tensor:
    return F.layer_norm(x, mod.normalized_shape, mod.weight.double(), mod.bias.double(), mod.eps)


def lin(x: torch.Tensor, mod: Any) -> torch.Tensor:
    return x @ mod.weight.double().T + mod.bias.double()


def pooled(states: Sequence[torch.Tensor], pooling: str, pooling_layers: int) -> np.ndarray:
    """One text's vector from its states [embeddings, layer 1, ..., layer L], each [t, hidden]."""
    if pooling == "mean":
        return states[-1].mean(0).numpy()
    if pooling == "cls":
        return states[-1][0].numpy()
    return torch.stack([s.mean(0) for s in states[-pooling_layers:]]).mean(0).numpy()


def worst_difference(
    got: np.ndarray,
    token_ids: Sequence[Sequence[int]],
    prefixes: Sequence[LoadedPrefix],
    reference: Callable[[list[int], LoadedPrefix | None], np.ndarray],
) -> float:
    """max |got[b, j] - reference(text b, prefix j)| over texts x prefixes (``base`` -> None)."""
    worst = 0.0
    for b, ids in enumerate(token_ids):
        for j, p in enumerate(prefixes):
            ref = reference(list(ids), None if p.builtin else p)
            worst = max(worst, float(np.abs(got[b, j] - ref).max()))
    return worst
