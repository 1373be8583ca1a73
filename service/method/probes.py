"""The one probe of the method: standardize + logistic regression, C chosen by stratified CV.

Every light model on fixed vectors goes through :func:`search_probe`: ``evaluate``'s table, the
transfer and source-value measures, the experiments, and the task heads. C is chosen by stratified
k-fold cross-validation on the training part only (a validation score: choices are made on it, never
on a test split). The fitted probe gives the arrays of a head file (``weight`` [classes, dim],
``bias`` [classes], ``mean``/``scale`` [dim]): the probability of class k is
``softmax(weight @ ((x - mean) / scale) + bias)[k]``, equal to scikit-learn's ``predict_proba``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

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


@dataclass(frozen=True)
class FittedProbe:
    """A standardized logistic regression fitted on all training examples with the chosen C."""

    pipeline: Pipeline  # StandardScaler + LogisticRegression (scikit-learn)
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
        return np.asarray(self._scaler.mean_, dtype=np.float32)

    @property
    def scale(self) -> np.ndarray:
        """float32 [dim]: divided by after the mean (1 where a feature is constant)."""
        return np.asarray(self._scaler.scale_, dtype=np.float32)

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


def search_probe(
    x_train: np.ndarray, y_train: Sequence[str], *, cs: Sequence[float] = CS, seed: int = 0, folds: int = 3
) -> FittedProbe:
    """Standardize + logistic regression, C from ``cs`` by stratified ``folds``-fold CV on
    (``x_train``, ``y_train``), then refitted on all of them."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    search = GridSearchCV(pipe, {"logisticregression__C": list(cs)}, cv=cv, scoring="accuracy")
    search.fit(x_train, list(y_train))
    return FittedProbe(
        search.best_estimator_,
        float(search.best_params_["logisticregression__C"]),
        float(search.best_score_),
    )


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
