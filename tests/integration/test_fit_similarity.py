"""``--select similarity`` on the tiny random BERT: a quick prefix trained on the examples ranks the
sources by the registry's similarity (checked against :func:`service.registry.similarity.similarity`
on an independently trained quick prefix), the head reads ``base`` + the top k (k by CV), the quick
prefix's steps are reported through the progress hook and bounded by the fit's budget; the command and
the route accept the rule, and bad rule names still get exit 2 / 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.prefix import BASE_NAME, LoadedPrefix
from service.errors import InvalidInput
from service.fitting.fit import select_and_fit
from service.fitting.quick import TaskEmbedding, quick_prefix
from service.fitting.rules import TOP_KS
from service.fitting.sources import Budget, FitStopped, Sources
from service.registry.similarity import similarity
from service.registry.writer import native_bytes
from tests.support.http import assert_error, wait_ready
from tests.support.prefixes import random_kv
from tests.support.waiting import wait_until

ADMIN = {"Authorization": "Bearer root"}
SOURCES = ("alpha", "beta", "gamma", "delta")
STEPS = 6


def _texts(n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Labelled texts whose word agrees with the label 3 times in 4 (so the quick prefix has work to do:
    a perfect dev score at step 0 would end its training before any step)."""
    rng = np.random.default_rng(0)
    words = {"pos": ["fine", "great", "lovely"], "neg": ["awful", "sad", "broken"]}
    labels = tuple("pos" if i % 2 else "neg" for i in range(n))
    flip = {"pos": "neg", "neg": "pos"}
    texts = tuple(
        f"the {rng.choice(words[y if rng.random() < 0.75 else flip[y]])} day {i}"
        for i, y in enumerate(labels)
    )
    return texts, labels


def _prefixes(backbone: Backbone) -> dict[str, LoadedPrefix]:
    out = {}
    for i, name in enumerate(SOURCES):
        key, value = random_kv(backbone.spec, 3, seed=10 + i)
        out[name] = LoadedPrefix(name, f"{i:064x}", key, value, "none", name, "native", first_layer=0)
    return out


def _sources(labels: tuple[str, ...]) -> Sources:
    """Vectors where ``gamma`` carries the label and the others are noise."""
    rng = np.random.default_rng(1)
    names = (BASE_NAME, *SOURCES)
    vectors = rng.normal(size=(len(labels), len(names), 8)).astype(np.float32)
    vectors[:, 3, 0] += np.where(np.array(labels) == "pos", 2.0, -2.0)
    return Sources(names, tuple(f"{i:064x}" for i in range(len(names))), vectors, labels)


def test_the_rule_keeps_base_and_the_top_k_of_the_registry_ranking(tiny_bert: Backbone) -> None:
    texts, labels = _texts(90)
    prefixes = _prefixes(tiny_bert)
    stages: list[tuple[str, int, int]] = []
    embedding = TaskEmbedding(tiny_bert, texts, labels, prefixes, steps=STEPS)
    fitted = select_and_fit(
        _sources(labels), "similarity", progress=lambda *s: stages.append(s), task_embedding=embedding
    )
    choice = fitted.choice
    assert choice.rule == "similarity"
    # the reference: the same quick prefix trained again, compared by the registry's similarity
    quick, _ = quick_prefix(tiny_bert, texts, labels, steps=STEPS)
    expected = {n: similarity(quick, p) for n, p in prefixes.items()}
    ranking = choice.detail["ranking"]
    assert set(ranking) == set(SOURCES)
    for name, value in ranking.items():
        assert value == pytest.approx(expected[name], abs=1e-4)
    values = [expected[n] for n in ranking]
    assert values == sorted(values, reverse=True)  # type: ignore[type-var]
    k = choice.detail["k"]
    assert k in {min(x, len(SOURCES)) for x in TOP_KS}
    top = set(list(ranking)[:k])
    assert fitted.inputs == tuple(n for n in (BASE_NAME, *SOURCES) if n == BASE_NAME or n in top)
    assert [t.note.split(" (")[0] for t in choice.trials] == [f"top {x}" for x in (1, 2, 3, 4)]
    # the quick prefix's steps went through the progress hook, then the CV searches
    quick_steps = [s for s in stages if s[0] == "quick-prefix"]
    assert quick_steps[0] == ("quick-prefix", 0, STEPS)
    assert quick_steps[-1] == ("quick-prefix", STEPS, STEPS)
    assert any(s[0] == "similarity" for s in stages)
    assert fitted.model.weight.shape == (1, 8 * len(fitted.inputs))


def test_the_rule_needs_the_examples_and_stops_with_its_fit(tiny_bert: Backbone) -> None:
    texts, labels = _texts(60)
    with pytest.raises(InvalidInput, match="similarity"):
        select_and_fit(_sources(labels), "similarity")
    budget = Budget()
    budget.stop.set()
    embedding = TaskEmbedding(tiny_bert, texts, labels, _prefixes(tiny_bert), steps=STEPS)
    with pytest.raises(FitStopped, match="quick prefix"):
        select_and_fit(_sources(labels), "similarity", budget=budget, task_embedding=embedding)


@pytest.fixture
def folder(tmp_path: Path, tiny_bert: Backbone) -> Path:
    out = tmp_path / "prefixes"
    out.mkdir()
    for i, name in enumerate(SOURCES[:3]):
        key, value = random_kv(tiny_bert.spec, 2 + i, seed=i)
        meta = {"backbone_fingerprint": tiny_bert.spec.fingerprint}
        (out / f"{name}.safetensors").write_bytes(native_bytes(key, value, meta))
    return out


def _examples(n: int) -> list[dict[str, str]]:
    texts, labels = _texts(n)
    return [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)]


def _check_result(result: dict[str, Any]) -> None:
    assert result["rule"] == "similarity"
    ranking = list(result["detail"]["ranking"])
    assert sorted(ranking) == list(SOURCES[:3])
    top = set(ranking[: result["detail"]["k"]])
    assert result["inputs"] == [n for n in (BASE_NAME, *SOURCES[:3]) if n == BASE_NAME or n in top]


def test_the_command_fits_with_similarity_and_refuses_a_bad_rule(tiny_bert_path: Path, folder: Path) -> None:
    data = folder.parent / "mood.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in _examples(60)))
    common = ["fit", "--data", str(data), "--name", "mood", "--prefix-dir", str(folder)]
    common += ["--model", str(tiny_bert_path), "--backend", "torch", "--no-progress"]
    runner = CliRunner()
    done = runner.invoke(cli, [*common, "--select", "similarity", "--json"])
    assert done.exit_code == 0, done.output
    _check_result(json.loads(done.stdout))
    assert (folder / "heads" / "mood.safetensors").is_file()
    bad = runner.invoke(cli, [*common, "--name", "other", "--select", "similar"])
    assert bad.exit_code == 2
    assert "similarity" in bad.output
    assert not (folder / "heads" / "other.safetensors").exists()


@pytest.fixture
def client(tiny_bert_path: Path, folder: Path) -> Iterator[TestClient]:
    settings = Settings(
        model=tiny_bert_path,
        prefix_dir=folder,
        device="cpu",
        dtype="float32",
        backend="torch",
        admin_key="root",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def test_the_route_fits_with_similarity_and_refuses_a_bad_rule(client: TestClient, folder: Path) -> None:
    r = client.post(
        "/heads/mood/fit", json={"examples": _examples(60), "select": "similarity"}, headers=ADMIN
    )
    assert r.status_code == 202, r.text
    assert r.json()["select"] == "similarity"

    def done() -> dict[str, Any] | None:
        doc: dict[str, Any] = client.get(r.json()["url"], headers=ADMIN).json()
        return doc if doc["state"] != "running" else None

    doc = wait_until(done, 120, "the similarity fit finished")
    assert doc["state"] == "succeeded", doc
    _check_result(doc["result"])
    assert client.get("/heads", headers=ADMIN).status_code == 200
    bad = client.post(
        "/heads/other/fit", json={"examples": _examples(60), "select": "similar"}, headers=ADMIN
    )
    assert_error(bad, 400, "invalid_input", "similarity")
    assert not (folder / "heads" / "other.safetensors").exists()
