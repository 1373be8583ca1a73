"""``POST /heads/{name}/fit`` on the fake encoder: a job (202, its URL, progress, the result table), the
head it writes served by ``/predict`` as scikit-learn predicts on the served ``/embed`` vectors, 409
for a second fit of the name, 429 past ``fit_max_running``, other requests served between the fit's
own batches, and every bad example set a 4xx that writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.runtime import Runtime
from tests.support.fake_encoder import FakeEncoder
from tests.support.http import assert_error, fake_app, fill_folder
from tests.support.waiting import wait_until

ADMIN = {"Authorization": "Bearer root"}
WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "road", "city", "rain", "snow"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=4)) + f" n{seed}x{i}" for i in range(n)]


def alpha_labels(fake: FakeEncoder, runtime: Runtime, items: list[str]) -> list[str]:
    """Labels that only prefix alpha's vector carries (the fake's vectors are independent per prefix)."""
    alpha = runtime.registry.snapshot.bank.get("alpha")  # type: ignore[union-attr]
    return ["pos" if fake.expected(t, alpha)[0] > 0 else "neg" for t in items]


def examples(items: list[str], labels: list[str]) -> list[dict[str, str]]:
    return [{"text": t, "label": y} for t, y in zip(items, labels, strict=True)]


def finished(client: TestClient, url: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = client.get(url, headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["state"] != "running" else None

    return wait_until(done, timeout, f"{url} finished")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, FakeEncoder, Runtime]]:
    folder = fill_folder(tmp_path / "prefixes")  # alpha, beta, gamma
    with fake_app(folder, admin_key="root", fit_chunk_texts=16) as app:
        yield app


def test_a_fit_job_writes_a_head_that_predicts_as_scikit_learn_on_the_served_vectors(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, fake, runtime = served
    items = texts(90)
    labels = alpha_labels(fake, runtime, items)
    r = client.post(
        "/heads/mood/fit", json={"examples": examples(items, labels), "select": "alpha,base"}, headers=ADMIN
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == job["url"] == f"/heads/mood/fit/{job['id']}"
    assert job["state"] == "running"
    assert job["examples"] == 90
    doc = finished(client, job["url"])
    assert doc["state"] == "succeeded", doc
    result = doc["result"]
    assert result["inputs"] == ["alpha", "base"]
    assert {row["rule"] for row in result["table"]} == {"names", "base", "all"}
    assert result["cv_accuracy"] > result["cv_accuracy_base"]
    head = runtime.registry.snapshot.heads.get("mood")  # type: ignore[union-attr]
    assert head.available
    assert head.head.digest == result["head"]["digest"]

    # the reference: scikit-learn fitted on the served /embed vectors, with the C the fit chose
    def served_concat(batch: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(batch), 8):
            e = client.post("/embed", json={"inputs": batch[i : i + 8], "prefixes": ["alpha", "base"]})
            out += [
                np.concatenate([d["embeddings"]["alpha"], d["embeddings"]["base"]]) for d in e.json()["data"]
            ]
        return np.array(out)

    model = make_pipeline(StandardScaler(), LogisticRegression(C=result["c"], max_iter=2000, random_state=0))
    model.fit(served_concat(items), labels)
    new = texts(8, seed=1)
    p = client.post("/predict", json={"inputs": new, "tasks": ["mood"]})
    assert p.status_code == 200, p.text
    want = model.predict_proba(served_concat(new))
    got = np.array(
        [[d["predictions"]["mood"]["scores"][c] for c in model.classes_] for d in p.json()["data"]]
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [d["predictions"]["mood"]["label"] for d in p.json()["data"]] == model.predict(
        served_concat(new)
    ).tolist()


def test_the_default_rule_favours_the_prefix_that_carries_the_label(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, fake, runtime = served
    items = texts(150)
    r = client.post(
        "/heads/mood/fit",
        json={"examples": examples(items, alpha_labels(fake, runtime, items))},
        headers=ADMIN,
    )
    doc = finished(client, r.json()["url"])
    result = doc["result"]
    assert result["select"] == "auto"
    assert "alpha" in result["inputs"]
    weights = result["weights"] or dict.fromkeys(result["inputs"], 1.0)
    assert weights["alpha"] == max(weights.values())
    assert all(weights.get(n, 0.0) < 0.5 for n in ("beta", "gamma")), weights
    assert result["candidates"] == ["base", "alpha", "beta", "gamma"]
    assert doc["progress"]["stage"] == "done"


def test_a_second_fit_of_a_name_gets_409_and_past_the_limit_429_while_others_are_served(
    served: tuple[TestClient, FakeEncoder, Runtime],
) -> None:
    client, fake, runtime = served
    items = texts(64)
    body = {"examples": examples(items, ["a", "b"] * 32), "select": "base"}
    fake.hold()
    r = client.post("/heads/one/fit", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    url = r.json()["url"]
    assert fake.entered.wait(10)
    assert_error(client.post("/heads/one/fit", json=body, headers=ADMIN), 409, "fit_running", "'one'", url)
    busy = client.post("/heads/two/fit", json=body, headers=ADMIN)
    assert_error(busy, 429, "fit_running", "fit_max_running=1")
    assert busy.headers["retry-after"]
    # an /embed sent now waits behind one of the fit's batches (16 texts), not behind all 64
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(client.post, "/embed", json={"inputs": ["hello there"]})
        wait_until(lambda: runtime.batcher.waiting_texts() >= 1, 10, "/embed queued")  # type: ignore[union-attr]
        fake.release(2)  # the fit's first batch, then the next one: the /embed
        assert other.result(30).status_code == 200
    state = client.get(url, headers=ADMIN).json()
    assert state["progress"]["stage"] == "embed", state
    assert state["progress"]["done"] < 64, state
    fake.release()
    assert finished(client, url)["state"] == "succeeded"
    assert client.post("/heads/one/fit", json=body, headers=ADMIN).status_code == 202


BAD: list[tuple[str, Any, int, str, tuple[str, ...]]] = [
    (
        "mood",
        {"examples": [{"text": "a b", "label": "x"}] * 6},
        422,
        "invalid_examples",
        ("one label", "'x'"),
    ),
    (
        "mood",
        {"examples": [{"text": " ", "label": "x"}, *[{"text": "a", "label": "y"}] * 5]},
        422,
        "invalid_examples",
        ("empty text", "0"),
    ),
    (
        "mood",
        {"examples": [{"text": f"t{i}", "label": f"l{i % 7}"} for i in range(21)]},
        422,
        "invalid_examples",
        ("7 distinct labels", "fit_max_labels=5"),
    ),
    (
        "mood",
        {"examples": [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(41)]},
        413,
        "too_many_examples",
        ("41 examples", "fit_max_examples=40"),
    ),
    (
        "mood",
        {"examples": [{"text": f"t{i}", "label": "aab"[i % 3]} for i in range(5)]},
        422,
        "invalid_examples",
        ("'b'", "fewer than 3"),
    ),
    (
        "mood",
        {"examples": [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)], "select": "alpha,nope"},
        400,
        "invalid_input",
        ("'nope'",),
    ),
    (
        "mood",
        {"examples": [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)], "select": "gamma"},
        400,
        "invalid_input",
        ("unknown or disabled: 'gamma'",),
    ),
    ("mood", {"examples": [{"text": "t", "label": True}] * 6}, 422, "validation_error", ("label",)),
    (
        "mood",
        {"examples": [{"text": "t", "label": "a", "weight": 1}] * 6},
        422,
        "validation_error",
        ("weight",),
    ),
    ("mood", {"examples": "t"}, 422, "validation_error", ("examples",)),
    (
        "Bad Name",
        {"examples": [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)]},
        400,
        "invalid_input",
        ("bad head name",),
    ),
]


@pytest.mark.parametrize(("name", "body", "status", "code", "fragments"), BAD)
def test_bad_example_sets_get_4xx_and_write_nothing(
    tmp_path: Path, name: str, body: Any, status: int, code: str, fragments: tuple[str, ...]
) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, admin_key="root", fit_max_labels=5, fit_max_examples=40) as (client, fake, runtime):
        assert client.patch("/prefixes/gamma", json={"enabled": False}, headers=ADMIN).status_code == 200
        assert_error(client.post(f"/heads/{name}/fit", json=body, headers=ADMIN), status, code, *fragments)
        assert runtime.fit_jobs.running() == []
        assert fake.calls == []  # nothing embedded
    assert not (folder / "heads").exists()


def test_a_fit_past_its_time_limit_fails_and_writes_nothing(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, admin_key="root", fit_timeout_s=1e-6) as (client, _, _):
        body = {"examples": [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(12)]}
        doc = finished(client, client.post("/heads/mood/fit", json=body, headers=ADMIN).json()["url"])
        assert doc["state"] == "failed", doc
        assert doc["error"]["code"] == "fit_timed_out", doc
        assert "fit_timeout_s" in doc["error"]["message"]
    assert not (folder / "heads").exists()


def test_fits_need_the_admin_key_and_unknown_jobs_are_404(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, admin_key="root", api_keys=["user"]) as (client, _, _):
        body = {"examples": [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)]}
        assert_error(client.post("/heads/mood/fit", json=body), 401, "invalid_api_key")
        assert_error(
            client.post("/heads/mood/fit", json=body, headers={"Authorization": "Bearer user"}),
            403,
            "admin_key_required",
        )
        assert_error(client.get("/heads/mood/fit/0123", headers=ADMIN), 404, "fit_job_not_found", "'0123'")
