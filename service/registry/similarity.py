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


def _blocks(prefix: LoadedPrefix, measure: str, relative: bool) -> np.ndarray:
    """Unit blocks [layers - first_layer, 2 (K, V), d] (d: hidden for ``mean``, Lp * hidden for ``flat``)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")
    key, value = prefix.key.double(), prefix.value.double()
    start = recorded_start(prefix) if relative else None
    if start is not None:
        key, value = key - start[0].double(), value - start[1].double()
    kv = torch.stack([key, value], dim=1)  # [layers, 2, heads, Lp, head_dim]
    layers = kv.shape[0]
    blocks = kv.mean(dim=3).reshape(layers, 2, -1) if measure == "mean" else kv.reshape(layers, 2, -1)
    return (blocks / blocks.norm(dim=2, keepdim=True).clamp(min=1e-12)).numpy()


def task_embedding(prefix: LoadedPrefix, measure: str = "mean", relative: bool = True) -> np.ndarray:
    """A unit vector (float64) describing the task ``prefix`` was trained on (comparable by a dot
    product with another prefix's of the same depth and shape; :func:`similarity` handles any two)."""
    blocks = _blocks(prefix, measure, relative)
    return blocks.reshape(-1) / np.sqrt(blocks.shape[0] * 2)


def _shared(a: LoadedPrefix, ab: np.ndarray, b: LoadedPrefix, bb: np.ndarray) -> float | None:
    """The mean per-block cosine over the layers both act in (max first_layer .. L-1), or None when
    the blocks differ in shape there (the flat measure with different prefix lengths)."""
    top = max(a.first_layer, b.first_layer)
    x, y = ab[top - a.first_layer :], bb[top - b.first_layer :]
    if x.shape != y.shape or not x.size:
        return None
    return float(np.clip(np.mean(np.sum(x * y, axis=2)), -1.0, 1.0))


def similarity(
    a: LoadedPrefix, b: LoadedPrefix, measure: str = "mean", relative: bool = True
) -> float | None:
    """Cosine of the two prefixes' task embeddings over the layers they share (prefixes of different
    depths compare over max(first_layer)..L-1); None when they cannot be compared (see :func:`why_not`)."""
    return _shared(a, _blocks(a, measure, relative), b, _blocks(b, measure, relative))


def why_not(a: LoadedPrefix, b: LoadedPrefix, measure: str) -> str:
    """Why :func:`similarity` of ``a`` and ``b`` is None."""
    return (
        f"the {measure} measure compares slot by slot and {a.name} has {a.prefix_len} slots, "
        f"{b.name} {b.prefix_len}; use the mean measure"
    )


def similarity_matrix(
    prefixes: Sequence[LoadedPrefix], measure: str = "mean", relative: bool = True
) -> np.ndarray:
    """Symmetric [P, P] cosine similarities in [-1, 1], each pair over the layers both act in; NaN for a
    pair that cannot be compared (the flat measure with different prefix lengths)."""
    blocks = [_blocks(p, measure, relative) for p in prefixes]
    n = len(prefixes)
    sims = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            value = _shared(prefixes[i], blocks[i], prefixes[j], blocks[j])
            if value is not None:
                sims[i, j] = sims[j, i] = value
    return sims


def rank_for(
    target: str, prefixes: Sequence[LoadedPrefix], measure: str = "mean", relative: bool = True
) -> list[tuple[str, float | None]]:
    """Other prefixes ranked by similarity to ``target`` (most similar first; those that cannot be
    compared last, with None)."""
    names = [p.name for p in prefixes]
    if target not in names:
        raise KeyError(target)
    sims = similarity_matrix(prefixes, measure, relative)[names.index(target)]
    pairs = [(n, None if np.isnan(s) else float(s)) for n, s in zip(names, sims, strict=True) if n != target]
    return sorted(pairs, key=lambda x: (x[1] is None, -(x[1] or 0.0), x[0]))


def similarity_document(
    prefixes: Sequence[LoadedPrefix], target: str | None = None, measure: str = "mean", relative: bool = True
) -> dict[str, Any]:
    """The ``GET /prefixes/similarity`` body: the matrix (null for a pair that cannot be compared), or
    the ranking for ``target``; ``not_comparable`` names such pairs and why."""
    prefixes = sorted(prefixes, key=lambda p: p.name)
    matrix = similarity_matrix(prefixes, measure, relative)
    doc: dict[str, Any] = {
        "measure": measure,
        "relative_to_init": relative,
        # pairs of different depths compare over the layers both act in: max(first_layer)..L-1
        "prefixes": [{"name": p.name, "digest": p.digest, "first_layer": p.first_layer} for p in prefixes],
    }
    if target is None:
        doc["matrix"] = [[None if np.isnan(x) else round(float(x), 6) for x in row] for row in matrix]
        pairs = [(i, j) for i in range(len(prefixes)) for j in range(i + 1, len(prefixes))]
    else:
        doc["target"] = target
        doc["ranking"] = [
            {"name": n, "similarity": None if s is None else round(s, 6)}
            for n, s in rank_for(target, prefixes, measure, relative)
        ]
        t = [p.name for p in prefixes].index(target)
        pairs = [(min(t, j), max(t, j)) for j in range(len(prefixes)) if j != t]
    doc["not_comparable"] = [
        {"a": prefixes[i].name, "b": prefixes[j].name, "reason": why_not(prefixes[i], prefixes[j], measure)}
        for i, j in pairs
        if np.isnan(matrix[i, j])
    ]
    return doc
