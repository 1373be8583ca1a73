"""The input rules on a synthetic task where one source's vector carries the label and the others are
noise: ``auto`` favours that source and predicts held-out examples at least as well as ``all``; each
rule keeps or up-weights it; the fit is deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import InvalidInput
from service.fitting.fit import AUTO, select_and_fit
from service.fitting.rules import RULES
from service.fitting.sources import Sources
from service.fitting.task import RULE_NAMES, parse_select

NAMES = ("base", "noise-a", "signal", "noise-b", "noise-c")


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, 5, 8] vectors: ``signal``'s first dimensions decide the label (3 classes); the rest is noise."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, len(NAMES), 8)).astype(np.float32)
    labels = np.array(["x", "y", "z"])[np.argmax(vectors[:, 2, :3] + 0.4 * rng.normal(size=(n, 3)), axis=1)]
    return vectors, labels


def _sources(vectors: np.ndarray, labels: np.ndarray) -> Sources:
    return Sources(NAMES, tuple(f"{i:064x}" for i in range(len(NAMES))), vectors, tuple(labels))


def _accuracy(fitted, vectors: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    test = _sources(vectors, labels)
    z = fitted.model.logits(test.features(fitted.inputs))
    predicted = np.asarray(fitted.model.labels)[z.argmax(1)]
    return float((predicted == labels).mean())


def test_the_rule_names_are_the_rules() -> None:
    assert set(RULE_NAMES) == set(RULES)
    assert AUTO in RULES


def test_auto_favours_the_source_that_carries_the_label_and_beats_all() -> None:
    vectors, labels = _synthetic(300, 0)
    held_v, held_y = _synthetic(400, 1)
    src = _sources(vectors, labels)
    auto, every = select_and_fit(src, "auto"), select_and_fit(src, "all")
    assert "signal" in auto.inputs
    weights = dict(zip(auto.inputs, auto.choice.weights or [1.0] * len(auto.inputs), strict=True))
    assert weights["signal"] == max(weights.values())
    assert all(weights.get(n, 0.0) < 0.5 for n in NAMES if n.startswith("noise")), weights
    assert auto.cv_all == pytest.approx(every.choice.cv_accuracy)
    assert _accuracy(auto, held_v, held_y) >= _accuracy(every, held_v, held_y)
    assert _accuracy(auto, held_v, held_y) > 0.75


@pytest.mark.parametrize("rule", ["greedy", "weighted", "stacked"])
def test_each_rule_keeps_the_signal(rule: str) -> None:
    vectors, labels = _synthetic(240, 2)
    held_v, held_y = _synthetic(300, 3)
    fitted = select_and_fit(_sources(vectors, labels), rule)
    assert "signal" in fitted.inputs
    assert _accuracy(fitted, held_v, held_y) > 0.7
    table = fitted.table()
    assert table[-2]["rule"] == "base"
    assert table[-1]["rule"] == "all"


def test_greedy_adds_only_what_beats_cv_noise() -> None:
    vectors, labels = _synthetic(240, 4)
    fitted = select_and_fit(_sources(vectors, labels), "greedy")
    assert fitted.inputs == ("base", "signal")


def test_a_fit_is_deterministic_for_a_seed() -> None:
    vectors, labels = _synthetic(150, 5)
    a = select_and_fit(_sources(vectors, labels), "weighted", seed=7)
    b = select_and_fit(_sources(vectors, labels), "weighted", seed=7)
    assert a.inputs == b.inputs
    np.testing.assert_array_equal(a.model.weight, b.model.weight)


def test_named_inputs_are_checked() -> None:
    assert parse_select("signal,base", NAMES) == ("signal", "base")
    with pytest.raises(InvalidInput, match="unknown or disabled: 'nope'"):
        parse_select("signal,nope", NAMES)
    with pytest.raises(InvalidInput, match="no name given"):
        parse_select(" , ", NAMES)
    vectors, labels = _synthetic(120, 6)
    fitted = select_and_fit(_sources(vectors, labels), "signal,base")
    assert fitted.inputs == ("signal", "base")
    assert fitted.model.weight.shape == (3, 16)


def test_best_cv_keeps_the_rule_of_the_best_cv_accuracy() -> None:
    vectors, labels = _synthetic(180, 7)
    src = _sources(vectors, labels)
    alone = {rule: select_and_fit(src, rule) for rule in ("greedy", "weighted", "stacked")}
    best = select_and_fit(src, "best-cv")
    top = max(alone.values(), key=lambda f: f.choice.cv_accuracy)
    assert best.choice.rule == "best-cv"
    assert best.choice.detail["chosen"] == top.choice.rule
    assert best.choice.detail["cv"] == {r: f.choice.cv_accuracy for r, f in alone.items()}
    assert best.inputs == top.inputs
    assert best.choice.stacked == top.choice.stacked
    np.testing.assert_array_equal(best.model.weight, top.model.weight)
