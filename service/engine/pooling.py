"""Pool token states into one vector per row (text tokens only: prefix positions are keys, not states)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

POOLINGS = ("mean", "cls", "multilayer")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [R, T, d], mask [R, T] -> [R, d], the mean over valid tokens (sentence-transformers' mean)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool(
    method: str, hidden_states: Sequence[torch.Tensor], mask: torch.Tensor, layers: int = 4
) -> torch.Tensor:
    """``hidden_states``: the model's states, last one = final layer.

    - ``mean``: mean of the final layer over valid tokens;
    - ``cls``: the first token of the final layer;
    - ``multilayer``: the mean of the last ``layers`` layers' mean-pooled states (Du et al. 2020 pool
      features from several layers for a general-purpose fixed representation).
    """
    if method == "mean":
        return mean_pool(hidden_states[-1], mask)
    if method == "cls":
        return hidden_states[-1][:, 0]
    if method == "multilayer":
        chosen = hidden_states[-layers:]
        return torch.stack([mean_pool(h, mask) for h in chosen]).mean(0)
    raise ValueError(f"unknown pooling {method!r}; expected one of {', '.join(POOLINGS)}")


def pooling_label(method: str, layers: int = 4) -> str:
    """What a vector's pooling is called in a head file's metadata (``multilayer`` names its layers): a
    head is served only where the server pools as the head was fitted."""
    return f"multilayer-{layers}" if method == "multilayer" else method
