"""Served models over HTTP: `prefixes: null` and the served name mean a fixed, pinned prefix set, and
`GET /v1/models` states each model's dimension and members."""

from __future__ import annotations

import json
from pathlib import Path

from service.registry.served import MODELS_FILE
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import assert_error, fake_app, fill_folder
from tests.support.prefixes import write_prefix
from tests.support.waiting import wait_until


def _pin(folder: Path, members: list[str], client_digests: dict[str, str]) -> None:
    doc = {
        "version": 1,
        "default": "fake-model",
        "models": {
            "fake-model": {"prefixes": [{"name": n, "digest": client_digests[n]} for n in members]},
            "just-beta": {"prefixes": ["beta"]},
        },
    }
    (folder / MODELS_FILE).write_text(json.dumps(doc))


def test_a_dropped_file_never_changes_the_default_dimension(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, default_prefixes="model", watch_reconcile_ms=50) as (client, _, runtime):
        digests = {p["name"]: p["digest"] for p in client.get("/prefixes").json()["prefixes"]}
        _pin(folder, ["base", "gamma", "alpha"], digests)
        wait_until(lambda: bool(runtime.pipeline.snapshot().served.models), 10, "models.json loaded")

        def served() -> tuple[list[str], int]:
            doc = client.post("/embed", json={"inputs": "a text"}).json()
            v1 = client.post("/v1/embeddings", json={"input": "a text", "model": "fake-model"}).json()
            return [p["name"] for p in doc["prefixes"]], len(v1["data"][0]["embedding"])

        assert served() == (["base", "gamma", "alpha"], 24)
        write_prefix(folder, "delta", FAKE_SPEC, seed=7)
        wait_until(lambda: "delta" in runtime.pipeline.snapshot().enabled, 10, "delta hot-loaded")
        assert served() == (["base", "gamma", "alpha"], 24)  # delta is served by name only
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["fake-model"]["dimension"] == 24
        assert [p["name"] for p in models["fake-model"]["prefixes"]] == ["base", "gamma", "alpha"]
        assert models["just-beta"]["dimension"] == 8
        assert models["delta"]["dimension"] == 8  # each enabled prefix is a model too


def test_a_pinned_member_replaced_makes_the_model_a_409_naming_it(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, default_prefixes="model", watch_reconcile_ms=50) as (client, _, runtime):
        digests = {p["name"]: p["digest"] for p in client.get("/prefixes").json()["prefixes"]}
        _pin(folder, ["base", "alpha"], digests)
        wait_until(lambda: bool(runtime.pipeline.snapshot().served.models), 10, "models.json loaded")
        write_prefix(folder, "alpha", FAKE_SPEC, seed=99)  # a new version of a pinned member
        wait_until(
            lambda: runtime.pipeline.snapshot().bank.get("alpha").digest != digests["alpha"], 10, "reload"
        )
        assert_error(
            client.post("/embed", json={"inputs": "x"}), 409, "model_unavailable", "alpha is at version"
        )
        r = client.post("/v1/embeddings", json={"input": "x", "model": "fake-model"})
        assert_error(r, 409, "model_unavailable", "'fake-model'", "alpha")
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert models["fake-model"]["available"] is False
        assert "alpha is at version" in models["fake-model"]["reason"]
        assert client.post("/embed", json={"inputs": "x", "prefixes": ["alpha"]}).status_code == 200
