"""The one probe: standardize + logistic regression, C chosen by stratified CV.

Every light model on fixed vectors goes through :func:`search_probe`: ``evaluate``'s table, the
transfer and source-value measures, the experiments, the shipped task heads and ``fit``. C is chosen
by stratified k-fold cross-validation on the training part only (a validation score: choices are made
on it, never on a test split); :func:`cross_validate` is that search, keeping each example's
out-of-fold scores (``fit`` compares input sets with them and stacks sources on them). The fitted
probe gives the arrays of a head file (``weight`` [classes, dim], ``bias`` [classes],
``mean``/``scale`` [dim]): the probability of class k is ``softmax(weight @ ((x - mean) / scale) +
bias)[k]``, equal to scikit-learn's ``predict_proba``.

It lives here, not in ``service.method``, so that the server's fit job (``POST /heads/{name}/fit``)
uses it without importing the research code (``service.method.probes`` scores it on test splits).
``weights`` (optional, one per dimension, > 0) multiply the standardized inputs before the
regression: a per-block scale is a per-block penalty (``fit --select weighted``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

CS = (0.01, 0.1, 1.0)  # the default grid of C


def class_rows(
    coef: np.ndarray, intercept: np.ndarray, classes: Sequence[int], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A logistic regression's weights as one row per class (float32 [n_classes, dim], [n_classes]).

    A binary fit has one logit z for its second class; the rows -z/2 and +z/2 give the same
    probabilities under softmax. ``classes``: the row of each fitted class (a class the fit never
    saw keeps a zero row)."""
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((n_classes, coef.shape[1]), dtype=np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    weight[list(classes)], bias[list(classes)] = coef, intercept
    return weight, bias


def _times(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return x * weights


def probe_pipeline(c: float, seed: int, weights: np.ndarray | None = None) -> Pipeline:
    """StandardScaler (then ``weights``, when given) + LogisticRegression(C=c): the probe's model."""
    lr = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    if weights is None:
        return make_pipeline(StandardScaler(), lr)
    return make_pipeline(StandardScaler(), FunctionTransformer(_times, kw_args={"weights": weights}), lr)


@dataclass(frozen=True)
class FittedProbe:
    """A standardized logistic regression fitted on all training examples with the chosen C."""

    pipeline: Pipeline  # StandardScaler [+ weights] + LogisticRegression (scikit-learn)
    c: float  # the chosen C
    cv_accuracy: float  # its mean stratified-CV accuracy on the training part

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self._lr.classes_]

    @property
    def weight(self) -> np.ndarray:
        """float32 [classes, dim], one row per label (binary fits too), on standardized inputs."""
        lr = self._lr
        return class_rows(lr.coef_, lr.intercept_, range(len(lr.classes_)), len(lr.classes_))[0]

    @property
    def bias(self) -> np.ndarray:
        lr = self._lr
        return class_rows(lr.coef_, lr.intercept_, range(len(lr.classes_)), len(lr.classes_))[1]

    @property
    def mean(self) -> np.ndarray:
        """float32 [dim]: subtracted before the weights."""
        return self.standardization()[0].astype(np.float32)

    @property
    def scale(self) -> np.ndarray:
        """float32 [dim]: divided by after the mean (1 where a feature is constant; divided by the
        input weights of a weighted probe, so ``(x - mean) / scale`` is what the regression reads)."""
        return self.standardization()[1].astype(np.float32)

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, scale) in float64: the regression reads ``(x - mean) / scale``."""
        mean = np.asarray(self._scaler.mean_, dtype=np.float64)
        scale = np.asarray(self._scaler.scale_, dtype=np.float64)
        if len(self.pipeline) == 3:
            scale = scale / self.pipeline[1].kw_args["weights"]
        return mean, scale

    def decision_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(coef, intercept) float64: ``decision_function(x) = coef @ ((x - mean) / scale) + intercept``
        ([1, dim] for two classes: the logit of ``labels[1]``; one row per class otherwise)."""
        return np.asarray(self._lr.coef_, dtype=np.float64), np.asarray(self._lr.intercept_, dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.pipeline.predict(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """[n, classes] in the order of :attr:`labels`."""
        return np.asarray(self.pipeline.predict_proba(x))

    @property
    def _lr(self) -> LogisticRegression:
        return self.pipeline[-1]

    @property
    def _scaler(self) -> StandardScaler:
        return self.pipeline[0]


@dataclass(frozen=True)
class CrossValidated:
    """The C search of one input set: mean fold accuracy per C, the chosen C (the first best, as
    scikit-learn's ``GridSearchCV`` ranks), and each example's out-of-fold decision values at it."""

    c: float
    cv_accuracy: float
    accuracies: tuple[float, ...]  # per C of the grid, in its order
    labels: list[str]  # sorted: the columns of ``decision``
    decision: np.ndarray  # [n, classes] (binary: [n, 1], the logit of labels[1]) out of fold
    correct: np.ndarray  # [n] bool: each example right or wrong out of fold (for paired comparisons)


def cross_validate(
    x: np.ndarray,
    y: Sequence[str],
    *,
    cs: Sequence[float] = CS,
    seed: int = 0,
    folds: int = 3,
    weights: np.ndarray | None = None,
) -> CrossValidated:
    """Stratified ``folds``-fold CV of the probe for every C of ``cs`` (the folds of ``GridSearchCV``
    with ``StratifiedKFold(folds, shuffle=True, random_state=seed)``)."""
    labels = np.asarray(list(y))
    classes = sorted(set(labels.tolist()))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels))
    fold_acc = np.zeros((len(cs), folds))
    decisions = []
    for i, c in enumerate(cs):
        decision = np.zeros((len(labels), 1 if len(classes) == 2 else len(classes)))
        for k, (train, val) in enumerate(splits):
            model = clone(probe_pipeline(c, seed, weights)).fit(x[train], labels[train])
            d = model.decision_function(x[val])
            decision[val] = d.reshape(len(val), -1)
            fold_acc[i, k] = float(np.mean(model.predict(x[val]) == labels[val]))
        decisions.append(decision)
    means = np.average(fold_acc, axis=1)
    best = int(np.argmax(means))
    decision = decisions[best]
    predicted_idx = (decision[:, 0] > 0).astype(int) if decision.shape[1] == 1 else decision.argmax(1)
    return CrossValidated(
        c=float(cs[best]),
        cv_accuracy=float(means[best]),
        accuracies=tuple(float(m) for m in means),
        labels=classes,
        decision=decision,
        correct=np.asarray(classes)[predicted_idx] == labels,
    )


def refit(
    x: np.ndarray,
    y: Sequence[str],
    searched: CrossValidated,
    *,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> FittedProbe:
    """The probe with ``searched``'s C, fitted on all of (``x``, ``y``)."""
    pipeline = probe_pipeline(searched.c, seed, weights).fit(x, list(y))
    return FittedProbe(pipeline, searched.c, searched.cv_accuracy)


def search_probe(
    x_train: np.ndarray,
    y_train: Sequence[str],
    *,
    cs: Sequence[float] = CS,
    seed: int = 0,
    folds: int = 3,
    weights: np.ndarray | None = None,
) -> FittedProbe:
    """Standardize + logistic regression, C from ``cs`` by stratified ``folds``-fold CV on
    (``x_train``, ``y_train``), then refitted on all of them."""
    searched = cross_validate(x_train, y_train, cs=cs, seed=seed, folds=folds, weights=weights)
    return refit(x_train, y_train, searched, seed=seed, weights=weights)
