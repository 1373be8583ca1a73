"""The task-similarity heatmap (matplotlib) of ``python -m service similarity``; the similarity math
itself is service/registry/similarity.py (shared with serving)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def heatmap(names: Sequence[str], sims: np.ndarray, path: Path, title: str = "prefix similarity") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.6 + 0.6 * n))
    off = np.abs(sims - np.eye(n))  # NaN: a pair that cannot be compared (left blank)
    lim = max(1e-6, float(np.nanmax(off))) if n > 1 and np.isfinite(off).any() else 1.0
    im = ax.imshow(sims, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{sims[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
