"""The one probe stack against independent computations: paired gain, concat, encodings, the probe
and the head arrays it gives (scikit-learn's own predict_proba is the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.engine.calibration import Calibration
from service.method.features import concat, encodings
from service.method.probes import ProbeScore, class_rows, paired_gain, score_probe, search_probe


def _score(accuracy: float, correct: list[int]) -> ProbeScore:
    return ProbeScore(accuracy, accuracy, 0.6, 0.1, np.array(correct, dtype=bool))


def test_paired_gain_is_the_mean_difference_with_its_paired_standard_error() -> None:
    a, b = _score(0.75, [1, 1, 1, 0]), _score(0.5, [1, 0, 1, 0])
    gain, se = paired_gain(a, b)
    assert gain == 0.25
    diffs = [0, 1, 0, 0]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    assert se == np.float64(sd / 2)
    assert math.isclose(a.stderr, math.sqrt(0.75 * 0.25 / 4))


def test_concat_normalizes_each_member_and_encodings_match_the_service() -> None:
    x = np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float32)
    y = np.array([[1.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    full = concat([x, y])
    assert np.allclose(full, [[0.6, 0.8, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0]])
    enc = encodings([x, y])  # uncalibrated: the fallback, per prefix
    assert np.array_equal(enc["float"], full)
    assert np.array_equal(enc["binary"], (full > 0).astype(np.float32))
    per_prefix = [
        np.round(127 * v / np.abs(v).max(axis=1, keepdims=True)) for v in (full[:, :2], full[:, 2:])
    ]
    assert np.array_equal(enc["int8"], np.concatenate(per_prefix, axis=1))
    cal = Calibration(
        np.zeros(2, np.float32) + 0.5,
        np.full(2, -1, np.float32),
        np.ones(2, np.float32),
        "mean",
        "f",
        "v",
        64,
    )
    calibrated = encodings([x, y], [cal, None], which=("ubinary", "uint8"))
    assert np.array_equal(calibrated["ubinary"][:, :2], (full[:, :2] > 0.5).astype(np.float32))
    assert np.array_equal(calibrated["uint8"][:, :2], np.floor((full[:, :2] + 1) / (2 / 255)).clip(0, 255))


def test_probe_separates_a_separable_task_and_reports_validation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = ["a" if v > 0 else "b" for v in x[:, 0]]
    p = score_probe(x[:90], y[:90], x[90:], y[90:], cs=(0.1, 1.0))
    assert p.accuracy > 0.9
    assert p.cv_accuracy > 0.85
    assert p.correct.shape == (30,)
    assert p.c in (0.1, 1.0)
    assert p.accuracy == pytest.approx(p.correct.mean())
    noise = score_probe(rng.normal(size=(90, 5)), y[:90], rng.normal(size=(30, 5)), y[90:], cs=(0.1,))
    assert noise.accuracy < p.accuracy


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("classes", [2, 3])
def test_head_arrays_give_scikit_learns_probabilities(classes: int) -> None:
    """weight/bias/mean/scale as a head file stores them: softmax(W (x - mean) / scale + b) is
    scikit-learn's predict_proba, for a binary fit (one logit) and a multinomial one."""
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(150, 6)) * rng.uniform(0.5, 3, size=6) + rng.normal(size=6)
    y = [
        f"c{int(v)}" for v in np.clip((x[:, 0] - x[:, 0].mean()) * classes / 3 + classes / 2, 0, classes - 1)
    ]
    probe = search_probe(x, y, cs=(0.1, 1.0), seed=0)
    assert probe.labels == sorted(set(y))
    assert probe.weight.shape == (classes, 6)
    assert probe.weight.dtype == np.float32
    assert probe.bias.shape == (classes,)
    assert probe.mean.shape == probe.scale.shape == (6,)
    ours = _softmax(((x - probe.mean) / probe.scale) @ probe.weight.T + probe.bias)
    assert np.abs(ours - probe.predict_proba(x)).max() < 1e-5
    assert np.array_equal(np.array(probe.labels)[ours.argmax(1)], probe.predict(x))
    assert np.allclose(probe.mean, x.mean(0), atol=1e-5)


def test_class_rows_puts_each_fitted_class_on_its_row() -> None:
    w, b = class_rows(np.array([[2.0, -4.0]]), np.array([1.0]), [0, 2], 3)
    assert np.array_equal(w, [[-1.0, 2.0], [0.0, 0.0], [1.0, -2.0]])  # the unseen class 1: a zero row
    assert np.array_equal(b, [-0.5, 0.0, 0.5])
