"""The measures' arithmetic against independent computations: paired gain, concat, encodings, probes."""

from __future__ import annotations

import math

import numpy as np

from service.method.measures import Probe, concat, encodings, paired_gain, probe


def test_paired_gain_is_the_mean_difference_with_its_paired_standard_error() -> None:
    a = Probe(0.75, 0.7, 0.1, np.array([1, 1, 1, 0], dtype=bool))
    b = Probe(0.5, 0.6, 0.1, np.array([1, 0, 1, 0], dtype=bool))
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
    enc = encodings(full)
    assert np.array_equal(enc["binary"], (full > 0).astype(np.float32))
    assert np.array_equal(enc["int8"], np.round(127 * full / np.abs(full).max(axis=1, keepdims=True)))


def test_probe_separates_a_separable_task_and_reports_validation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = ["a" if v > 0 else "b" for v in x[:, 0]]
    p = probe(x[:90], y[:90], x[90:], y[90:], cs=(0.1, 1.0))
    assert p.accuracy > 0.9
    assert p.cv_accuracy > 0.85
    assert p.correct.shape == (30,)
    assert p.c in (0.1, 1.0)
    noise = probe(rng.normal(size=(90, 5)), y[:90], rng.normal(size=(30, 5)), y[90:], cs=(0.1,))
    assert noise.accuracy < p.accuracy
