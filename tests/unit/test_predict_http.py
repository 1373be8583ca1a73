"""``POST /predict`` and ``/heads`` on the fake encoder: predictions equal scikit-learn's on the served
``/embed`` vectors, one batch for all heads, every bad request a 4xx naming the problem, heads listed,
enabled/disabled, uploaded and deleted like prefixes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.runtime import Runtime
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.heads import inputs_of, random_head_bytes, reference_predictions, write_random_head
from tests.support.http import assert_error, fake_app, fill_folder
from tests.support.metrics import metric_value

TEXTS = ["the film was great", "win a free phone now", "where is the station", "stocks fell", "ok"]
ADMIN = {"Authorization": "Bearer root"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, FakeEncoder, Runtime]]:
    folder = fill_folder(tmp_path / "prefixes")  # alpha, beta, gamma
    write_random_head(
        folder, "sentiment", FAKE_SPEC, ["alpha"], ["neg", "pos"], activation="sigmoid", scale=2
    )
    write_random_head(
        folder, "topic", FAKE_SPEC, ["base", "alpha", "beta"], ["a", "b", "c", "d"], seed=1, scale=2
    )
    write_random_head(
        folder, "intent", FAKE_SPEC, ["beta"], ["q", "s", "c"], seed=2, normalize=False, standardize=False
    )
    with fake_app(folder, admin_key="root") as app:
        yield app


def reference(
    client: TestClient, runtime: Runtime, task: str, texts: list[str]
) -> tuple[list[str], np.ndarray]:
    """scikit-learn with the head's weights on the served /embed vectors of its inputs, concatenated."""
    head = runtime.registry.snapshot.heads.get(task).head  # type: ignore[union-attr]
    names = [i.name for i in head.inputs]
    r = client.post("/embed", json={"inputs": texts, "prefixes": names, "normalize": head.normalize})
    assert r.status_code == 200, r.text
    concat = np.array([np.concatenate([item["embeddings"][n] for n in names]) for item in r.json()["data"]])
    return reference_predictions(head, concat)


def test_predict_equals_scikit_learn_on_the_served_embed_vectors(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, _, runtime = served
    r = client.post("/predict", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [h["name"] for h in body["heads"]] == ["intent", "sentiment", "topic"]  # null: every head, by name
    for task in ("intent", "sentiment", "topic"):
        labels, probs = reference(client, runtime, task, TEXTS)
        got = [item["predictions"][task] for item in body["data"]]
        assert [g["label"] for g in got] == labels
        head = runtime.registry.snapshot.heads.get(task).head  # type: ignore[union-attr]
        scores = np.array([[g["scores"][label] for label in head.labels] for g in got])
        # JSON carries float32 vectors in their shortest form ("0.1"), read back as float64: ~1e-8 apart
        np.testing.assert_allclose(scores, probs, atol=1e-6, rtol=0)
        assert [g["score"] for g in got] == [max(g["scores"].values()) for g in got]
    assert (
        len({item["predictions"]["topic"]["label"] for item in body["data"]}) > 1
    )  # not one constant answer
    assert body["usage"]["prompt_tokens"] == sum(len(t.split()) + 2 for t in TEXTS)
    digests = {p["name"]: p["digest"] for p in body["prefixes"]}
    assert r.headers["x-prefix-digests"] == ",".join(f"{n}={d}" for n, d in digests.items())


def test_three_heads_over_their_prefixes_are_one_batch_and_counted_per_task(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, fake, _ = served
    r = client.post("/predict", json={"inputs": TEXTS[:3], "tasks": ["topic", "sentiment", "intent"]})
    assert r.status_code == 200, r.text
    assert fake.forward_calls == 1
    assert [c.names for c in fake.calls] == [("base", "alpha", "beta")]  # the union, in order of first use
    assert list(r.json()["data"][0]["predictions"]) == ["topic", "sentiment", "intent"]  # request order
    metrics = client.get("/metrics").text
    for task in ("topic", "sentiment", "intent"):
        assert metric_value(metrics, "prefix_embed_predictions_total", {"task": task}) == 3


def test_a_head_whose_input_changed_is_refused_naming_the_input(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, _, runtime = served
    client.patch("/prefixes/beta", json={"enabled": False}, headers=ADMIN).raise_for_status()
    listed = {h["name"]: h for h in client.get("/heads").json()["heads"]}
    assert listed["topic"]["available"] is False
    assert (
        listed["topic"]["reason"]
        == "input beta is disabled (enable or restore those prefixes, or refit the head)"
    )
    assert listed["sentiment"]["available"] is True
    r = client.post("/predict", json={"inputs": "x", "tasks": ["topic"]})
    assert_error(r, 409, "head_unavailable", "head 'topic' is unavailable", "input beta is disabled")
    body = client.post("/predict", json={"inputs": "x"}).json()  # null: only the available heads
    assert [h["name"] for h in body["heads"]] == ["sentiment"]


BAD: list[tuple[dict[str, Any], int, str, tuple[str, ...]]] = [
    ({"inputs": "x", "tasks": ["nope"]}, 404, "head_not_found", ("'nope'", "intent, sentiment, topic")),
    ({"inputs": "x", "tasks": []}, 400, "invalid_input", ("tasks is an empty list", "every available head")),
    (
        {"inputs": "x", "tasks": ["topic", "topic"]},
        400,
        "invalid_input",
        ("tasks lists 'topic' more than once",),
    ),
    ({"inputs": "x", "tasks": "topic"}, 422, "validation_error", ("tasks",)),
    ({"inputs": "x", "tasks": ["x"] * 1025}, 422, "validation_error", ("1025 names", "MAX_REQUEST_PREFIXES")),
    ({"inputs": ["a"] * 9}, 413, "too_many_inputs", ("9 items", "max_client_batch")),
    ({"inputs": ""}, 400, "invalid_input", ("empty string",)),
    ({"inputs": [1]}, 422, "validation_error", ("item 0 is a number",)),
    ({"inputs": "x", "prefixes": ["alpha"]}, 422, "validation_error", ("unknown field 'prefixes'",)),
    ({"inputs": " ".join(["w"] * 40), "truncate": False}, 413, "input_too_long", ("limit of 32 tokens",)),
]


@pytest.mark.parametrize(("body", "status", "code", "fragments"), BAD)
def test_bad_predict_requests_are_4xx_naming_the_problem(
    served: tuple[TestClient, FakeEncoder, Runtime],
    body: dict[str, Any],
    status: int,
    code: str,
    fragments: tuple[str, ...],
) -> None:
    client, _, _ = served
    assert_error(client.post("/predict", json=body), status, code, *fragments)


def test_disabled_heads_are_refused_and_no_head_at_all_is_409(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, _, _ = served
    r = client.patch(
        "/heads", json={"intent": {"enabled": False}, "topic": {"enabled": False}}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert {h["name"]: h["enabled"] for h in r.json()["heads"]} == {
        "intent": False,
        "sentiment": True,
        "topic": False,
    }
    assert_error(
        client.post("/predict", json={"inputs": "x", "tasks": ["intent"]}), 409, "head_disabled", "'intent'"
    )
    client.patch("/heads/sentiment", json={"enabled": False}, headers=ADMIN).raise_for_status()
    assert_error(
        client.post("/predict", json={"inputs": "x"}), 409, "no_available_heads", "intent (disabled)"
    )


def test_heads_are_uploaded_and_deleted_with_the_admin_key(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, _, runtime = served
    folder = runtime.settings.prefix_dir
    data = random_head_bytes(
        FAKE_SPEC, inputs_of(folder, ["gamma"], FAKE_SPEC), ["x", "y"], activation="sigmoid"
    )
    assert_error(client.put("/heads/new", content=data), 401, "invalid_api_key", "admin key")
    r = client.put("/heads/new", content=data, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["available"] is True
    assert r.json()["inputs"] == [
        {"name": "gamma", "digest": inputs_of(folder, ["gamma"], FAKE_SPEC)[0].digest}
    ]
    assert client.put("/heads/new", content=data, headers=ADMIN).status_code == 200
    assert client.post("/predict", json={"inputs": "x", "tasks": ["new"]}).status_code == 200
    assert_error(
        client.put("/heads/bad", content=b"junk", headers=ADMIN),
        422,
        "invalid_head_file",
        "heads/bad.safetensors",
    )
    assert_error(client.delete("/heads/new"), 401, "invalid_api_key")
    r = client.delete("/heads/new", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert "new" not in [h["name"] for h in r.json()["heads"]]
    assert not (folder / "heads" / "new.safetensors").exists()
    assert_error(client.delete("/heads/new", headers=ADMIN), 404, "head_not_found", "'new'")
    assert_error(client.post("/predict", json={"inputs": "x", "tasks": ["new"]}), 404, "head_not_found")


def test_get_heads_lists_rejected_files_with_the_reason(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, _, runtime = served
    (runtime.settings.prefix_dir / "heads" / "broken.safetensors").write_bytes(b"\x00" * 12)
    runtime.registry.refresh()  # type: ignore[union-attr]
    body = client.get("/heads").json()
    assert [r["source"] for r in body["rejected"]] == ["heads/broken.safetensors"]
    assert [h["name"] for h in body["heads"]] == ["intent", "sentiment", "topic"]
    assert client.post("/predict", json={"inputs": "x"}).status_code == 200  # the others serve
    assert client.get("/info").json()["heads"] == {"loaded": 3, "available": 3, "rejected": 1}
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "prefix_embed_heads_loaded") == 3
    assert metric_value(metrics, "prefix_embed_heads_available") == 3
