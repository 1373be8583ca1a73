"""An MPNet server (tiny random MPNet, the app in-process): a MiniLM prefix (a shipped file) offered
to it, in its folder or by PUT, is rejected naming the other backbone; its own prefix is served and
equals MPNet written out by hand."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.prefix import LoadedPrefix
from service.registry.writer import native_bytes
from tests.support.http import assert_error, wait_ready
from tests.support.mpnet_reference import reference
from tests.support.prefixes import trunk_prefix

REPO = Path(__file__).resolve().parents[2]
MINILM_PREFIX = REPO / "prefixes" / "sentiment.safetensors"  # shipped, trained on all-MiniLM-L6-v2
TEXTS = ["I loved this film", "Stocks fell sharply after the report on Monday"]


@pytest.fixture(scope="module")
def own(tiny_mpnet: Backbone) -> LoadedPrefix:
    return trunk_prefix(tiny_mpnet.spec, "own", 1, 4, seed=5)


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, tiny_mpnet: Backbone, tiny_mpnet_path: Path, own: LoadedPrefix
) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("mpnet-prefixes")
    shutil.copy(MINILM_PREFIX, folder / "minilm-sentiment.safetensors")
    meta = {"backbone_fingerprint": tiny_mpnet.spec.fingerprint, "position_convention": "none"}
    (folder / "own.safetensors").write_bytes(native_bytes(own.key, own.value, meta, first_layer=1))
    settings = Settings(
        model=tiny_mpnet_path, prefix_dir=folder, device="cpu", dtype="float32", backend="torch", watch=False
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


def test_a_minilm_prefix_in_the_folder_is_rejected_naming_the_backbone(
    client: TestClient, tiny_mpnet: Backbone
) -> None:
    doc = client.get("/prefixes").json()
    reasons = {Path(r["source"]).name: r["reason"] for r in doc["rejected"]}
    reason = reasons["minilm-sentiment.safetensors"]
    assert "trained for backbone bert-L6-H384-" in reason
    assert f"this server runs {tiny_mpnet.spec.fingerprint}" in reason
    assert tiny_mpnet.spec.fingerprint.startswith("mpnet-L3-H32-")
    assert "own" in {p["name"] for p in doc["prefixes"]}


def test_a_minilm_prefix_put_is_refused_naming_the_backbone(client: TestClient, tiny_mpnet: Backbone) -> None:
    r = client.put("/prefixes/minilm-put", content=MINILM_PREFIX.read_bytes())
    assert_error(
        r, 422, "invalid_prefix_file", "trained for backbone bert-L6-H384-", tiny_mpnet.spec.fingerprint
    )
    assert "minilm-put" not in {p["name"] for p in client.get("/prefixes").json()["prefixes"]}


def test_own_prefix_is_served_as_mpnet_written_out(
    client: TestClient, tiny_mpnet: Backbone, own: LoadedPrefix
) -> None:
    doc = client.post("/embed", json={"inputs": TEXTS, "prefixes": ["base", "own"]}).json()
    for i, text in enumerate(TEXTS):
        ids = tiny_mpnet.tokenizer(text)["input_ids"]
        for name, prefix in (("base", None), ("own", own)):
            want = reference(tiny_mpnet, ids, prefix, "mean")
            got = np.array(doc["data"][i]["embeddings"][name])
            np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-5, rtol=0)
