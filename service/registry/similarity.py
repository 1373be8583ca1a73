"""Task embeddings from prefix parameters (Zhou et al. 2022): a similarity between prefixes.

Used by serving (``GET /prefixes/similarity``) and by the method (``python -m service similarity``,
the transfer study); it lives here so that serving never imports ``service.method``.

The measure (default ``mean``):

1. **Change from the start.** Prefixes trained here start from one seeded N(0, std^2) draw (metadata
   ``init``, reproduced by service/registry/init_record.py), shared by every task of the same
   backbone, length and seed. That shared start would dominate a raw comparison, so the task
   embedding uses ``trained - initial``. Prefixes without a reproducible ``init`` (PEFT folders, files
   from elsewhere) use their raw parameters.
2. **Position-averaged.** Attention treats prefix slots as an unordered set of keys/values (they have
   no position embedding), so slot i of one prefix has no reason to match slot i of another; the mean
   over slots is permutation-invariant and lets prefixes of different lengths be compared.
3. **Per-block normalized.** Each (layer, K or V) block [hidden] is L2-normalized before the blocks
   are joined, so no single layer or the larger-norm keys dominate.
4. **Cosine** of the joined vectors = the mean of the 2 x layers per-block cosines.

``flat`` keeps the slots (per-block normalized, flattened; needs equal prefix lengths).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from service.engine.prefix import LoadedPrefix
from service.registry.init_record import recorded_start

MEASURES = ("mean", "flat")


def task_embedding(prefix: LoadedPrefix, measure: str = "mean", relative: bool = True) -> np.ndarray:
    """A unit vector (float64) describing the task ``prefix`` was trained on."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")
    key, value = prefix.key.double(), prefix.value.double()
    start = recorded_start(prefix) if relative else None
    if start is not None:
        key, value = key - start[0].double(), value - start[1].double()
    kv = torch.stack([key, value], dim=1)  # [layers, 2, heads, Lp, head_dim]
    layers = kv.shape[0]
    blocks = kv.mean(dim=3).reshape(layers * 2, -1) if measure == "mean" else kv.reshape(layers * 2, -1)
    blocks = blocks / blocks.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (blocks.reshape(-1) / np.sqrt(layers * 2)).numpy()


def similarity_matrix(
    prefixes: Sequence[LoadedPrefix], measure: str = "mean", relative: bool = True
) -> np.ndarray:
    """Symmetric [P, P] cosine similarities of the task embeddings, in [-1, 1]."""
    if measure == "flat" and len({p.key.shape for p in prefixes}) > 1:
        raise ValueError("the flat measure needs prefixes of one shape; use the mean measure")
    emb = np.stack([task_embedding(p, measure, relative) for p in prefixes]) if prefixes else np.zeros((0, 0))
    sims = emb @ emb.T
    return np.clip((sims + sims.T) / 2, -1.0, 1.0)


def rank_for(
    target: str, prefixes: Sequence[LoadedPrefix], measure: str = "mean", relative: bool = True
) -> list[tuple[str, float]]:
    """Other prefixes ranked by similarity to ``target`` (most similar first)."""
    names = [p.name for p in prefixes]
    if target not in names:
        raise KeyError(target)
    sims = similarity_matrix(prefixes, measure, relative)[names.index(target)]
    pairs = [(n, float(s)) for n, s in zip(names, sims, strict=True) if n != target]
    return sorted(pairs, key=lambda x: (-x[1], x[0]))


def similarity_document(
    prefixes: Sequence[LoadedPrefix], target: str | None = None, measure: str = "mean", relative: bool = True
) -> dict[str, Any]:
    """The ``GET /prefixes/similarity`` body: the matrix, or the ranking for ``target``."""
    prefixes = sorted(prefixes, key=lambda p: p.name)
    doc: dict[str, Any] = {
        "measure": measure,
        "relative_to_init": relative,
        "prefixes": [{"name": p.name, "digest": p.digest} for p in prefixes],
    }
    if target is None:
        doc["matrix"] = [
            [round(float(x), 6) for x in row] for row in similarity_matrix(prefixes, measure, relative)
        ]
    else:
        doc["target"] = target
        doc["ranking"] = [
            {"name": n, "similarity": round(s, 6)} for n, s in rank_for(target, prefixes, measure, relative)
        ]
    return doc
