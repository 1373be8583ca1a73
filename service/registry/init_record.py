"""What a prefix file's ``init`` metadata records: the seeded starting point, reproduced exactly.

A prefix trained here starts from a seeded N(0, std^2) draw and records it as metadata ``init``:
``{"method": "normal", ...}`` (a PEFT prompt table [Lp, layers*2*hidden]) or ``{"method": "normal-kv",
...}`` (native key then value [layers - S, heads, Lp, head_dim]), each with ``seed`` and ``std``.
Every prefix of one backbone, length and seed starts from the same point, so the change of the
parameters (trained - recorded start) is comparable between tasks (service/registry/similarity.py).

The draws live here, below both users: training (service/method/init.py) draws its start with them,
and serving's ``GET /prefixes/similarity`` reproduces the recorded start with the same functions,
without importing the training code.
"""

from __future__ import annotations

import torch

from service.engine.prefix import LoadedPrefix
from service.registry.peft import prompt_to_kv


def normal_prompt(num_layers: int, hidden: int, prefix_len: int, seed: int, std: float) -> torch.Tensor:
    """The ``normal`` start [Lp, layers*2*hidden] (PEFT's prompt table): N(0, std^2) from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(prefix_len, num_layers * 2 * hidden, generator=g) * std


def normal_kv(shape: tuple[int, ...], seed: int, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``normal-kv`` start of a native prefix: N(0, std^2) draws of ``shape``
    [layers - S, heads, Lp, head_dim] from ``seed``, key first."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * std, torch.randn(shape, generator=g) * std


def recorded_start(prefix: LoadedPrefix) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (key, value) ``prefix`` started from, in its own layout, or None when its metadata records
    no reproducible start (PEFT folders, files from elsewhere, token or projection starts)."""
    init = prefix.metadata.get("init")
    if not isinstance(init, dict):
        return None
    if init.get("method") == "normal-kv":
        return normal_kv(tuple(prefix.key.shape), int(init["seed"]), float(init["std"]))
    if init.get("method") != "normal":
        return None
    layers, heads, plen, hdim = prefix.key.shape
    w = normal_prompt(layers, heads * hdim, plen, int(init["seed"]), float(init["std"]))
    return prompt_to_kv(w, layers, heads, hdim)
