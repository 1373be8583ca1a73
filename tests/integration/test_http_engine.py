"""The app over the real torch engine (tiny random BERT), lifespan included: HTTP vectors equal the
engine's direct ``embed_sync`` vectors, one forward call per request, hot-load with real files."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.backend import build_torch_encoder
from service.config import Settings
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.torch_encoder import TorchEncoder
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.wire.encodings import decode_base64_float, l2_normalize
from tests.support.http import assert_error, wait_ready
from tests.support.metrics import scrape
from tests.support.waiting import wait_until

TEXTS = [
    "short",
    "a much longer text that needs quite a few more tokens than the others do",
    "medium length text here",
]
NAMES = ["p1", "p2", "p3"]


@pytest.fixture(scope="module")
def prefix_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Backbone) -> Path:
    from service.registry.writer import native_bytes
    from tests.support.prefixes import random_kv

    folder = tmp_path_factory.mktemp("prefixes")
    for i, name in enumerate(NAMES):  # different lengths and both position conventions
        key, value = random_kv(tiny_bert.spec, 2 + 3 * i, seed=i)
        meta = {
            "backbone_fingerprint": tiny_bert.spec.fingerprint,
            "position_convention": ("peft", "none")[i % 2],
        }
        (folder / f"{name}.safetensors").write_bytes(native_bytes(key, value, meta))
    return folder


@pytest.fixture(scope="module")
def settings(tiny_bert_path: Path, prefix_dir: Path) -> Settings:
    return Settings(
        model=tiny_bert_path,
        prefix_dir=prefix_dir,
        device="cpu",
        dtype="float32",
        max_input_tokens=40,
        default_prefixes="enabled",
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def reference(settings: Settings, tiny_bert: Backbone) -> TorchEncoder:
    """An encoder of its own, in this process: what the engine computes without HTTP or batcher."""
    return build_torch_encoder(settings, backbone=tiny_bert)


def engine_vectors(encoder: TorchEncoder, folder: Path, names: list[str], texts: list[str]) -> np.ndarray:
    loaded, _ = scan_folder(folder, encoder.spec, PrefixLimits(max_prefix_len=256, max_file_bytes=1 << 24))
    vectors, _ = embed_sync(encoder, PrefixBank.build(loaded), names, texts)
    return l2_normalize(vectors)


def test_per_prefix_vectors_equal_the_engine(
    client: TestClient, reference: TorchEncoder, prefix_dir: Path
) -> None:
    calls = scrape(client, "prefix_embed_forward_calls_total")
    rows = scrape(client, "prefix_embed_batch_rows_total")
    doc = client.post("/embed", json={"inputs": TEXTS}).json()
    # 3 texts x (base + 3 prefixes) = 12 rows in ONE model call: base (first_layer = L, acts in no
    # layer) rides in the file prefixes' depth-0 call (slot_groups: no more layer rows than its own)
    assert scrape(client, "prefix_embed_forward_calls_total") == calls + 1
    assert scrape(client, "prefix_embed_batch_rows_total") == rows + 12
    want = engine_vectors(reference, prefix_dir, NAMES, TEXTS)
    assert [p["name"] for p in doc["prefixes"]] == ["base", *NAMES]
    assert all(p["dim"] == 32 for p in doc["prefixes"])
    for i, item in enumerate(doc["data"]):
        got = np.array([item["embeddings"][n] for n in NAMES])
        np.testing.assert_allclose(got, want[i], atol=1e-5)
    tokens = sum(len(reference.backbone.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert doc["usage"]["prompt_tokens"] == tokens


def test_concurrent_requests_with_different_prefix_sets(
    client: TestClient, reference: TorchEncoder, prefix_dir: Path
) -> None:
    asks = [
        (["p3"], TEXTS[0]),
        (["p2", "p1"], TEXTS[1]),
        (["p1", "p2", "p3"], TEXTS[2]),
        (["p3", "p1"], TEXTS[0]),
    ]
    results: dict[int, dict] = {}

    def ask(i: int) -> None:
        names, text = asks[i]
        results[i] = client.post(
            "/embed", json={"inputs": [text], "prefixes": names, "combine": "concat", "encoding": "base64"}
        ).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (names, text) in enumerate(asks):
        want = engine_vectors(reference, prefix_dir, names, [text])[0]
        got = decode_base64_float(results[i]["data"][0]["embedding"])
        np.testing.assert_allclose(got, want.reshape(-1) / np.sqrt(len(names)), atol=1e-5)


def test_openai_route_equals_the_engine(
    client: TestClient, reference: TorchEncoder, prefix_dir: Path
) -> None:
    doc = client.post("/v1/embeddings", json={"input": TEXTS, "model": "p2"}).json()
    want = engine_vectors(reference, prefix_dir, ["p2"], TEXTS)[:, 0]
    np.testing.assert_allclose([d["embedding"] for d in doc["data"]], want, atol=1e-5)


def test_input_too_long_without_truncation_names_the_limit(client: TestClient) -> None:
    long = " ".join(["word"] * 60)
    assert_error(
        client.post("/embed", json={"inputs": long, "truncate": False}), 413, "input_too_long", "limit of 40"
    )
    assert client.post("/embed", json={"inputs": long}).status_code == 200  # truncated by default


def test_info_reports_the_real_model(client: TestClient, reference: TorchEncoder) -> None:
    info = client.get("/info").json()
    assert info["fingerprint"] == reference.spec.fingerprint
    assert (info["backend"], info["device"], info["dtype"], info["dim"]) == ("torch", "cpu", "float32", 32)
    assert info["limits"]["max_input_tokens"] == 40


def served_names(client: TestClient) -> list[str]:
    return [p["name"] for p in client.get("/prefixes").json()["prefixes"]]


def test_a_dropped_in_file_is_served_without_a_restart(
    client: TestClient, reference: TorchEncoder, prefix_dir: Path, write_prefix: Callable[..., Path]
) -> None:
    # How fast a file is picked up is measured by benchmarks, not asserted here (a loaded machine).
    write_prefix(prefix_dir, "p4", reference.spec, prefix_len=5, seed=4)
    wait_until(lambda: "p4" in served_names(client), what="p4 hot-loaded")
    doc = client.post("/embed", json={"inputs": TEXTS[:1], "prefixes": ["p4"]}).json()
    want = engine_vectors(reference, prefix_dir, ["p4"], TEXTS[:1])[0, 0]
    np.testing.assert_allclose(doc["data"][0]["embeddings"]["p4"], want, atol=1e-5)
    (prefix_dir / "p4.safetensors").unlink()
    wait_until(lambda: "p4" not in served_names(client), what="p4's removal picked up")
