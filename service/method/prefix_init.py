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
