"""Light probes on fixed representations: which vectors a target task is fitted on, and the fit itself.

Feature sets follow the service's output: each prefix's vector is L2-normalized (``normalize: true``);
a concat joins the normalized vectors (the 1/sqrt(P) scale of the response does not change a
standardized probe); ``binary`` = the concat's sign bits (``numpy.packbits(x > 0)``, 1 bit/dim) and
``int8`` = ``round(127 x / max|x|)`` per vector, both exactly as service/engine/quantize.py encodes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.method.represent import PLAIN
from service.wire.encodings import binarize, int8_quantize, l2_normalize


@dataclass(frozen=True)
class FeatureSet:
    """One representation of a target's texts: ``name`` (table row), vectors, bytes per text as served."""

    name: str
    kind: str  # plain | single | baseline | concat | leave-one-out | binary | int8
    dropped: str | None
    features: np.ndarray
    bytes_per_text: int


def feature_sets(
    reps: dict[str, np.ndarray], sources: Sequence[str], baselines: Sequence[str] = ()
) -> list[FeatureSet]:
    """plain; each source prefix; each baseline prefix; concat of sources; concat minus each source;
    concat as binary and as int8."""
    sets = [FeatureSet(PLAIN, "plain", None, l2_normalize(reps[PLAIN]), reps[PLAIN].shape[1] * 4)]
    for n in sources:
        sets.append(FeatureSet(n, "single", None, l2_normalize(reps[n]), reps[n].shape[1] * 4))
    for n in baselines:
        sets.append(FeatureSet(n, "baseline", None, l2_normalize(reps[n]), reps[n].shape[1] * 4))
    if len(sources) < 2:
        return sets

    def concat(names: Sequence[str]) -> np.ndarray:
        return np.concatenate([l2_normalize(reps[n]) for n in names], axis=1)

    full = concat(sources)
    dim = full.shape[1]
    sets.append(FeatureSet("concat", "concat", None, full, dim * 4))
    for n in sources:
        rest = [s for s in sources if s != n]
        sets.append(
            FeatureSet(f"concat - {n}", "leave-one-out", n, concat(rest), (dim - reps[n].shape[1]) * 4)
        )
    bits = np.unpackbits(binarize(full), axis=1)[:, :dim].astype(np.float32)
    sets.append(FeatureSet("concat binary", "binary", None, bits, (dim + 7) // 8))
    sets.append(FeatureSet("concat int8", "int8", None, int8_quantize(full).astype(np.float32), dim))
    return sets


@dataclass(frozen=True)
class ProbeScore:
    accuracy: float
    macro_f1: float
    c: float


def search_probe(
    x_train: np.ndarray, y_train: Sequence[str], *, cs: Sequence[float], seed: int
) -> tuple[Any, float, float]:
    """Standardize + logistic regression with C chosen by stratified 3-fold CV on the training part:
    (fitted model, chosen C, its CV accuracy)."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    search = GridSearchCV(pipe, {"logisticregression__C": list(cs)}, cv=cv, scoring="accuracy")
    search.fit(x_train, list(y_train))
    return (
        search.best_estimator_,
        float(search.best_params_["logisticregression__C"]),
        float(search.best_score_),
    )


def fit_probe(
    x_train: np.ndarray,
    y_train: Sequence[str],
    x_test: np.ndarray,
    y_test: Sequence[str],
    *,
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
) -> ProbeScore:
    """Standardize + logistic regression; C picked by 3-fold CV on the training part only."""
    if len(cs) > 1:
        model, c, _ = search_probe(x_train, y_train, cs=cs, seed=seed)
    else:
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        model, c = pipe.set_params(logisticregression__C=cs[0]).fit(x_train, list(y_train)), float(cs[0])
    pred = model.predict(x_test)
    return ProbeScore(
        accuracy=float(accuracy_score(list(y_test), pred)),
        macro_f1=float(f1_score(list(y_test), pred, average="macro", zero_division=0)),
        c=c,
    )
