"""The method's classifiers as head files: a fitted probe gives scikit-learn's predict_proba, a trained
linear layer torch's softmax, once written and parsed back as the server loads them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engine.prefix import base_prefix
from service.heads.head import HeadInput
from service.heads.writer import build_head
from service.method.head_fit import head_accuracy, linear_head, probe_head
from service.method.probes import search_probe
from tests.support.fake_encoder import FAKE_SPEC

INPUTS = [HeadInput("base", base_prefix(FAKE_SPEC).digest), HeadInput("alpha", "a" * 64)]


@pytest.mark.parametrize("classes", [["no", "yes"], ["a", "b", "c", "d"]])
def test_a_fitted_probe_predicts_as_scikit_learn(classes: list[str]) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (len(classes), 16))
    y = [classes[i % len(classes)] for i in range(120)]
    x = np.stack([centers[classes.index(label)] + rng.normal(0, 1.5, 16) for label in y])
    fitted = search_probe(x[:90], y[:90], cs=(0.01, 0.1, 1.0), seed=0)
    model = fitted.pipeline
    params = probe_head(fitted, INPUTS, task="t", normalize=False, metadata={})
    head, _ = build_head("probe", params, FAKE_SPEC)
    assert head.activation == ("sigmoid" if len(classes) == 2 else "softmax")
    assert list(head.labels) == sorted(classes)
    vectors = x[90:].reshape(30, 2, 8)
    # float32 file weights against scikit-learn's float64 ones: ~1e-6
    np.testing.assert_allclose(head.probabilities(vectors), model.predict_proba(x[90:]), atol=1e-5)
    acc = head_accuracy(head, vectors, y[90:])
    assert acc.correct == int((model.predict(x[90:]) == np.asarray(y[90:])).sum())
    assert acc.n == 30


def test_a_trained_linear_layer_predicts_as_torch() -> None:
    layer = torch.nn.Linear(16, 3)
    params = linear_head(
        layer.weight.detach().numpy(), layer.bias.detach().numpy(), ["x", "y", "z"], INPUTS,
        task="t", normalize=False, metadata={"fit": {"max_length": 64}},
    )  # fmt: skip
    head, _ = build_head("lin", params, FAKE_SPEC)
    x = torch.randn(20, 16)
    want = torch.softmax(layer(x), dim=-1).detach().numpy()
    np.testing.assert_allclose(head.probabilities(x.numpy().reshape(20, 2, 8)), want, atol=1e-6)
    assert head.metadata["fit"] == {"max_length": 64}
