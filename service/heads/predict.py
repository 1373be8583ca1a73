"""From a request's heads to the ``POST /predict`` document: which prefixes the one batch embeds, and
each head's probabilities from those vectors (a matrix product per head, never a model call).

Used by the route and by ``python -m service predict`` alike, so the CLI prints what the route returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InferenceFailed
from service.heads.head import HeadInput, TaskHead
from service.heads.table import HeadTable, input_names


@dataclass(frozen=True)
class PredictPlan:
    """The heads of one request, the prefixes its one embedding batch runs (the union of the heads'
    inputs) and, per head, where its inputs are among them."""

    heads: tuple[TaskHead, ...]
    names: tuple[str, ...]
    columns: tuple[tuple[int, ...], ...]

    @property
    def prefixes(self) -> list[HeadInput]:
        """The embedded prefixes with their digests (availability made them the heads' own)."""
        digests = {i.name: i.digest for h in self.heads for i in h.inputs}
        return [HeadInput(n, digests[n]) for n in self.names]


def plan_predict(table: HeadTable, tasks: Sequence[str] | None) -> PredictPlan:
    """Choose the heads (:meth:`HeadTable.choose`: 404/409 naming what is wrong) and their batch."""
    heads = table.choose(tasks)
    names = input_names(heads)
    where = {n: i for i, n in enumerate(names)}
    columns = tuple(tuple(where[i.name] for i in h.inputs) for h in heads)
    return PredictPlan(tuple(heads), tuple(names), columns)


def head_probabilities(plan: PredictPlan, vectors: np.ndarray) -> list[np.ndarray]:
    """Per head, [B, labels] probabilities from ``vectors`` [B, len(plan.names), dim] (unnormalized)."""
    if not np.isfinite(vectors).all():  # never predict from a wrong vector
        raise InferenceFailed("the model produced a non-finite vector; see the server log")
    return [h.probabilities(vectors[:, list(cols)]) for h, cols in zip(plan.heads, plan.columns, strict=True)]


def render_predict_document(
    *, model: str, plan: PredictPlan, vectors: np.ndarray, prompt_tokens: int
) -> dict[str, Any]:
    """The response: per text, per head ``{label, score, scores: {label: probability}}``; the heads and
    the prefixes used, with their digests; ``usage``."""
    per_head = []
    for head, probs in zip(plan.heads, head_probabilities(plan, vectors), strict=True):
        best = probs.argmax(axis=1).tolist()
        labels = head.labels
        per_head.append(
            [
                {"label": labels[k], "score": row[k], "scores": dict(zip(labels, row, strict=True))}
                for k, row in zip(best, probs.tolist(), strict=True)
            ]
        )
    data = [
        {"index": i, "predictions": {h.name: per_head[j][i] for j, h in enumerate(plan.heads)}}
        for i in range(vectors.shape[0])
    ]
    return {
        "model": model,
        "heads": [
            {
                "name": h.name,
                "digest": h.digest,
                "task": h.task,
                "labels": list(h.labels),
                "inputs": [{"name": i.name, "digest": i.digest} for i in h.inputs],
            }
            for h in plan.heads
        ],
        "prefixes": [{"name": p.name, "digest": p.digest} for p in plan.prefixes],
        "data": data,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
