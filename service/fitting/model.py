"""From a chosen input set to the linear map a head file stores.

A head computes ``z = ((x - mean) / scale) @ weight.T + bias`` on its inputs' normalized, joined
vectors, then a sigmoid of the one logit (two labels, as scikit-learn fits a binary problem) or a
softmax over the rows. :func:`probe_model` gives that map for a fitted probe (plain or weighted);
:func:`stacked_model` folds per-source probes and the meta-probe over their logits into one such map
(both stages are linear in the standardized inputs, so the stack is exact, not approximated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.fitting.probe import FittedProbe
from service.heads.head import HeadInput
from service.heads.writer import HeadParams


@dataclass(frozen=True)
class LinearModel:
    """``weight`` [rows, dim_in] (rows = 1 for two labels: the logit of ``labels[1]``), ``bias``
    [rows], ``mean``/``scale`` [dim_in]; float64."""

    labels: list[str]
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def head_params(
        self, inputs: Sequence[HeadInput], *, task: str, normalize: bool, metadata: dict[str, Any]
    ) -> HeadParams:
        """What the head file holds (for :mod:`service.heads.writer`): a sigmoid over the one logit
        for two labels, else a softmax over the rows."""
        return HeadParams(
            weight=self.weight,
            bias=self.bias,
            labels=self.labels,
            inputs=list(inputs),
            normalize=normalize,
            activation="sigmoid" if self.binary else "softmax",
            task=task,
            mean=self.mean,
            scale=self.scale,
            metadata=metadata,
        )


def probe_model(fitted: FittedProbe) -> LinearModel:
    """The map of a fitted probe: its standardization (divided by its input weights, if any) and its
    coefficients (the one logit for two classes, one row per class otherwise)."""
    weight, bias = fitted.decision_map()
    mean, scale = fitted.standardization()
    return LinearModel(fitted.labels, weight, bias, mean, scale)


def stacked_model(sources: Sequence[FittedProbe], meta: FittedProbe) -> LinearModel:
    """One linear map equal to ``meta``'s decision on the joined decisions of ``sources`` (each reading
    its own block of the input, in order): ``meta(z)`` with ``z_b = A_b ((x_b - m_b) / s_b) + c_b``.
    The meta-probe reads ``(z - M) / S`` with its coefficients ``B``."""
    b_coef, bias = meta.decision_map()
    meta_mean, meta_scale = meta.standardization()
    weights, col = [], 0
    for probe in sources:
        a, c = probe.decision_map()
        k = a.shape[0]
        b_block = b_coef[:, col : col + k] / meta_scale[col : col + k]
        weights.append(b_block @ a)
        bias = bias + b_block @ (c - meta_mean[col : col + k])
        col += k
    standardizations = [p.standardization() for p in sources]
    return LinearModel(
        labels=meta.labels,
        weight=np.concatenate(weights, axis=1),
        bias=bias,
        mean=np.concatenate([m for m, _ in standardizations]),
        scale=np.concatenate([s for _, s in standardizations]),
    )
