"""The two measures of a prefix recipe: source value and transfer, each against the ``base`` vector.

- source value: on a source task's held-out test split, a linear probe on the prefix's vector
  against the same probe on ``base`` (a task prefix must beat base on its own task);
- transfer: on a target task (never trained on), the probe on the default concat (``base`` first,
  then the prefixes, each L2-normalized as served) against the probe on ``base``; also the concat's
  binary and int8 encodings.

Every probe: standardize + logistic regression, C by stratified 3-fold CV on the probe-training part
only. Reported per probe: test accuracy, the CV accuracy (a validation score: recipe choices are made
on it, never on a test split), and each test example's correctness, so a difference between two
probes on the same test texts gets a paired standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.method.probes import search_probe
from service.wire.encodings import binarize, int8_quantize, l2_normalize


@dataclass(frozen=True)
class Probe:
    accuracy: float  # on the test split
    cv_accuracy: float  # 3-fold CV on the probe-training part (validation)
    c: float
    correct: np.ndarray  # [n_test] bool

    @property
    def stderr(self) -> float:
        n = len(self.correct)
        return math.sqrt(self.accuracy * (1 - self.accuracy) / n) if n else float("nan")


def probe(
    x_train: np.ndarray,
    y_train: Sequence[str],
    x_test: np.ndarray,
    y_test: Sequence[str],
    *,
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> Probe:
    model, c, cv_accuracy = search_probe(x_train, y_train, cs=cs, seed=seed)
    correct = np.asarray(model.predict(x_test)) == np.asarray(list(y_test))
    return Probe(float(correct.mean()), cv_accuracy, c, correct)


def paired_gain(a: Probe, b: Probe) -> tuple[float, float]:
    """(accuracy of a - accuracy of b, its paired standard error over the same test examples)."""
    d = a.correct.astype(np.float64) - b.correct.astype(np.float64)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def concat(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The served concat: each vector L2-normalized, joined in order (the 1/sqrt(P) scale of the
    response does not change a standardized probe)."""
    return np.concatenate([l2_normalize(v) for v in vectors], axis=1)


def encodings(full: np.ndarray) -> dict[str, np.ndarray]:
    """float, binary (sign bits, as ``encoding: "binary"``) and int8 (as ``encoding: "int8"``)."""
    dim = full.shape[1]
    bits = np.unpackbits(binarize(full), axis=1)[:, :dim].astype(np.float32)
    return {"float": full, "binary": bits, "int8": int8_quantize(full).astype(np.float32)}
