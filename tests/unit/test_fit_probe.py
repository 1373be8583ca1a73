"""The one probe against scikit-learn's own search: the same C, CV score and model as ``GridSearchCV``
over the same folds; out-of-fold decisions as ``cross_val_predict``; a weighted probe's head arrays
give its pipeline's probabilities; a stacked map equals the meta-probe on the per-source decisions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.fitting.model import probe_model, stacked_model
from service.fitting.probe import cross_validate, refit, search_probe


def _task(classes: int, n: int = 150, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, dim))
    y = [f"c{i % classes}" for i in range(n)]
    x = np.stack([centers[i % classes] + rng.normal(0, 1.5, dim) for i in range(n)]) * rng.uniform(
        0.5, 3, dim
    )
    return x, y


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _probabilities(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    return _softmax(logits)


@pytest.mark.parametrize("classes", [2, 4])
def test_search_probe_is_grid_search_cv(classes: int) -> None:
    x, y = _task(classes)
    cs = (0.001, 0.01, 0.1, 1.0)
    ours = search_probe(x, y, cs=cs, seed=3)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=3))
    grid = GridSearchCV(
        pipe, {"logisticregression__C": list(cs)}, cv=StratifiedKFold(3, shuffle=True, random_state=3)
    ).fit(x, y)
    assert ours.c == grid.best_params_["logisticregression__C"]
    assert ours.cv_accuracy == pytest.approx(grid.best_score_, abs=1e-12)
    np.testing.assert_array_equal(ours.predict_proba(x), grid.predict_proba(x))
    searched = cross_validate(x, y, cs=cs, seed=3)
    np.testing.assert_allclose(searched.accuracies, grid.cv_results_["mean_test_score"], atol=1e-12)


def test_out_of_fold_decisions_are_cross_val_predict() -> None:
    x, y = _task(3)
    searched = cross_validate(x, y, cs=(0.1,), seed=1)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=1))
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    want = cross_val_predict(pipe, x, y, cv=cv, method="decision_function")
    np.testing.assert_allclose(searched.decision, want, rtol=1e-10, atol=1e-10)
    assert searched.correct.tolist() == (cross_val_predict(pipe, x, y, cv=cv) == np.array(y)).tolist()


@pytest.mark.parametrize("classes", [2, 3])
def test_a_weighted_probes_arrays_give_its_probabilities(classes: int) -> None:
    x, y = _task(classes)
    weights = np.repeat([1.0, 0.3, 0.05], 2)
    fitted = search_probe(x, y, cs=(0.1, 1.0), weights=weights)
    model = probe_model(fitted)
    np.testing.assert_allclose(_probabilities(model.logits(x)), fitted.predict_proba(x), atol=1e-10)
    # the weights are a per-dimension penalty: a reference fit on pre-scaled standardized inputs
    z = StandardScaler().fit_transform(x) * weights
    ref = LogisticRegression(C=fitted.c, max_iter=2000, random_state=0).fit(z, y)
    np.testing.assert_allclose(fitted.predict_proba(x), ref.predict_proba(z), atol=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_stacked_map_is_the_meta_probe_on_the_source_decisions(classes: int) -> None:
    x, y = _task(classes, dim=9)
    blocks = [x[:, :3], x[:, 3:6], x[:, 6:]]
    sources = [search_probe(b, y, cs=(0.1,)) for b in blocks]
    oof = np.concatenate([cross_validate(b, y, cs=(0.1,)).decision for b in blocks], axis=1)
    meta = refit(oof, y, cross_validate(oof, y, cs=(0.01, 1.0)))
    stacked = stacked_model(sources, meta)
    decisions = np.concatenate(
        [p.pipeline.decision_function(b).reshape(len(y), -1) for p, b in zip(sources, blocks, strict=True)],
        axis=1,
    )
    np.testing.assert_allclose(_probabilities(stacked.logits(x)), meta.predict_proba(decisions), atol=1e-9)
