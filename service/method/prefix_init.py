"""The deterministic starting point of every prefix trained here (light: no PEFT import)."""

from __future__ import annotations

import torch


def initial_prompt(num_layers: int, hidden: int, prefix_len: int, seed: int, std: float) -> torch.Tensor:
    """The deterministic starting prefix [Lp, layers*2*hidden]: N(0, std^2) from ``seed``.

    Every prefix of one backbone, length and seed starts from the same point, so the parameters'
    change (trained - initial) is comparable between tasks (service/method/similarity.py).
    """
    g = torch.Generator().manual_seed(seed)
    return torch.randn(prefix_len, num_layers * 2 * hidden, generator=g) * std


def initial_kv(shape: tuple[int, ...], seed: int, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting key and value of a native (``train --first-layer``) prefix, ``init: normal-kv``:
    N(0, std^2) draws of ``shape`` [layers - S, heads, Lp, head_dim] from ``seed``, key first."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * std, torch.randn(shape, generator=g) * std
