"""Probes scored on a test split: :func:`score_probe` (the one probe, :func:`search_probe`, fitted on the
training part and scored on the test part) and :func:`paired_gain` (two probes on the same test texts).

The probe itself (standardize + logistic regression, C by stratified CV) lives in
:mod:`service.fitting.probe`, where the server's fit job uses it too; its names are importable from
here for the method's callers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from service.fitting.probe import CS, FittedProbe, class_rows, search_probe

__all__ = ["CS", "FittedProbe", "ProbeScore", "class_rows", "paired_gain", "score_probe", "search_probe"]


@dataclass(frozen=True)
class ProbeScore:
    """A fitted probe scored on a test split."""

    accuracy: float
    macro_f1: float
    cv_accuracy: float  # validation: the CV accuracy of the chosen C on the training part
    c: float
    correct: np.ndarray  # [n_test] bool: each test example right or wrong (for paired comparisons)

    @property
    def stderr(self) -> float:
        n = len(self.correct)
        return math.sqrt(self.accuracy * (1 - self.accuracy) / n) if n else float("nan")


def score_probe(
    x_train: np.ndarray,
    y_train: Sequence[str],
    x_test: np.ndarray,
    y_test: Sequence[str],
    *,
    cs: Sequence[float] = CS,
    seed: int = 0,
) -> ProbeScore:
    """:func:`search_probe` on the training part, scored on the test part."""
    fitted = search_probe(x_train, y_train, cs=cs, seed=seed)
    gold = np.asarray(list(y_test))
    pred = fitted.predict(x_test)
    return ProbeScore(
        accuracy=float(accuracy_score(gold, pred)),
        macro_f1=float(f1_score(gold, pred, average="macro", zero_division=0)),
        cv_accuracy=fitted.cv_accuracy,
        c=fitted.c,
        correct=pred == gold,
    )


def paired_gain(a: ProbeScore, b: ProbeScore) -> tuple[float, float]:
    """(accuracy of a - accuracy of b, its paired standard error over the same test examples)."""
    d = a.correct.astype(np.float64) - b.correct.astype(np.float64)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se
