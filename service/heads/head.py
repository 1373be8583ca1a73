"""A task head: a linear classifier on the concatenation of some prefixes' vectors, and its math.

The math is the one scikit-learn's ``make_pipeline(StandardScaler(), LogisticRegression())`` applies
in ``predict_proba``: ``z = ((x - mean) / scale) @ weight.T + bias``, then a softmax over the classes
(``weight`` has one row per label), or for two labels a sigmoid of the one logit (``weight`` has one
row: the logit of ``labels[1]``, as scikit-learn fits a binary problem). ``x`` is the head's inputs'
vectors, each L2-normalized first when ``normalize``, concatenated in the order of ``inputs``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.wire.encodings import l2_normalize

Activation = Literal["softmax", "sigmoid"]
ACTIVATIONS: tuple[Activation, ...] = ("softmax", "sigmoid")


@dataclass(frozen=True)
class HeadInput:
    """One input of a head: a prefix name (``base`` included) and the digest the head was fitted on."""

    name: str
    digest: str


@dataclass(frozen=True, eq=False)
class TaskHead:
    """One validated head. Arrays are float64 (the products run in float64, as scikit-learn's do)."""

    name: str
    digest: str  # sha256 of the file's bytes
    labels: tuple[str, ...]
    inputs: tuple[HeadInput, ...]
    normalize: bool
    activation: Activation
    weight: np.ndarray  # [rows, dim_in]: rows = len(labels) (softmax) or 1 (sigmoid)
    bias: np.ndarray  # [rows]
    mean: np.ndarray | None  # [dim_in] standardization, or None
    scale: np.ndarray | None  # [dim_in], every entry > 0
    task: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    @property
    def dim_in(self) -> int:
        return int(self.weight.shape[1])

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` [B, len(inputs), dim] (unnormalized, in the order of ``inputs``) -> [B, labels]."""
        x = l2_normalize(vectors) if self.normalize else vectors
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        if self.mean is not None and self.scale is not None:
            flat = (flat - self.mean) / self.scale
        logits = flat @ self.weight.T + self.bias
        if self.activation == "sigmoid":
            p1 = _sigmoid(logits[:, 0])
            return np.stack([1.0 - p1, p1], axis=1)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Both branches stay finite: exp of a non-positive number only.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out
