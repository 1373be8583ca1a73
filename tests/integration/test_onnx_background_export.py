"""Issue 23 item 3: a prefix hot-loaded at a new fan-out depth never blocks other requests.

The export of its depth is held (an injected slow exporter: the real export behind a gate) while
requests for it and, concurrently, for other prefixes are answered: the new prefix in the deepest
exported call below its depth (depth 0 here), exact against torch; the others unaffected. The test
checks the export was still held when every request had its answer, then releases it and sees the
calls switch to the new depth (fewer layer-rows) with the same vectors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from service.app import create_app
from service.config import Settings
from service.engine.backbone import Backbone, load_backbone, read_spec
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.onnx_encoder import OnnxEncoder
from service.engine.onnx_export import ExportResult, ensure_onnx_export
from service.engine.prefix import base_prefix
from service.engine.torch_encoder import TorchEncoder
from service.registry.folder import scan_folder
from service.registry.writer import native_bytes
from service.wire.encodings import l2_normalize
from tests.support.http import wait_ready
from tests.support.metrics import metric_value
from tests.support.models import save_tiny
from tests.support.prefixes import write_prefix
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # two ONNX exports of a tiny model

TEXTS = ["short", "a longer text with a few more tokens in it", "x y z"]
HELD_S = 120.0  # the gate's own bound: a bug that waited on the export fails instead of hanging


class GatedExporter:
    """The real export of a depth, run only once ``gate`` is set; records the depths asked for."""

    def __init__(self, model: Path, cache: Path) -> None:
        self.model, self.cache = model, cache
        self.gate = threading.Event()
        self.gate.set()  # open while the service starts (base's depth is exported before /ready)
        self.asked: list[int] = []

    def __call__(self, fan_out: int) -> ExportResult:
        self.asked.append(fan_out)
        assert self.gate.wait(HELD_S), "the export gate was never opened"
        return ensure_onnx_export(self.model, self.cache, pooling="mean", pooling_layers=4, fan_out=fan_out)


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """Depths 0 (all layers), 1 (the new prefix) and 2 (``base``, exported at start)."""
    return save_tiny(tmp_path_factory.mktemp("tiny3"), "bert", minilm_path, layers=3)


@pytest.fixture
def served(three_layers: Path, tmp_path: Path) -> Iterator[tuple[TestClient, OnnxEncoder, GatedExporter]]:
    tiny_bert_path = three_layers
    cache, folder = tmp_path / "onnx", tmp_path / "prefixes"
    folder.mkdir()
    spec = read_spec(tiny_bert_path)
    write_prefix(folder, "flat", spec, prefix_len=3, seed=1)  # all layers: depth 0
    first = ensure_onnx_export(tiny_bert_path, cache, pooling="mean", pooling_layers=4)
    exporter = GatedExporter(tiny_bert_path, cache)
    encoder = OnnxEncoder(
        first.path,
        first.key,
        spec,
        AutoTokenizer.from_pretrained(tiny_bert_path, local_files_only=True),
        default_max_tokens=64,
        device="cpu",
        exporter=exporter,
    )
    settings = Settings(
        model=tiny_bert_path,
        prefix_dir=folder,
        watch=False,
        backend="onnx",
        device="cpu",
        onnx_cache_dir=cache,
        vector_cache_bytes=0,  # every request below really runs the encoder
    )
    with TestClient(create_app(settings, encoder=encoder)) as client:
        wait_ready(client, timeout=600)  # start-up exports (and quantizes) under the test machine's load
        yield client, encoder, exporter
    exporter.gate.set()


def embed(client: TestClient, names: list[str]) -> np.ndarray:
    r = client.post("/embed", json={"inputs": TEXTS, "prefixes": names, "encoding": "float"})
    assert r.status_code == 200, r.text
    return np.array([[item["embeddings"][n] for n in names] for item in r.json()["data"]])


def reference(backbone: Backbone, folder: Path, names: list[str]) -> np.ndarray:
    loaded, rejected = scan_folder(folder, backbone.spec, Settings().prefix_limits())
    assert not rejected
    bank = PrefixBank.build(loaded, base=base_prefix(backbone.spec))
    vectors, _ = embed_sync(TorchEncoder(backbone, chunk_rows=0), bank, names, TEXTS)
    return l2_normalize(vectors)


def test_a_new_depth_exports_in_the_background_and_blocks_nobody(
    served: tuple[TestClient, OnnxEncoder, GatedExporter], three_layers: Path, tmp_path: Path
) -> None:
    client, encoder, exporter = served
    tiny_bert = load_backbone(three_layers, device="cpu", dtype="float32")
    layers = tiny_bert.spec.num_layers
    deep = 1
    assert encoder.exported_depths == [0, layers - 1]  # base's depth, at start
    assert exporter.asked == [layers - 1]
    exporter.gate.clear()  # from here on, an export waits until the test releases it
    g = torch.Generator().manual_seed(7)
    shape = (layers - deep, tiny_bert.spec.num_heads, 5, tiny_bert.spec.head_dim)
    data = native_bytes(
        torch.randn(shape, generator=g) * 0.5,
        torch.randn(shape, generator=g) * 0.5,
        {"position_convention": "none"},
        first_layer=deep,
    )
    put = client.put("/prefixes/deep", content=data)
    assert put.status_code == 201, put.text

    # the first request for the new depth starts its export and is answered at depth 0, exactly
    want = ["deep", "base"]
    before = metric_value(client.get("/metrics").text, "prefix_embed_layer_rows_total")
    got = embed(client, want)
    rows_at_0 = metric_value(client.get("/metrics").text, "prefix_embed_layer_rows_total") - before
    ref = reference(tiny_bert, tmp_path / "prefixes", want)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert exporter.asked == [layers - 1, deep]
    assert client.get("/info").json()["engine"]["onnx_exporting"] == [deep]

    # while the export is held: concurrent requests for the other prefixes and for the new one
    flat_ref = reference(tiny_bert, tmp_path / "prefixes", ["flat"])
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda names: (names, embed(client, names)), [["flat"], ["base"], want] * 4))
    for names, vectors in answers:
        expected = {"flat": flat_ref, "base": ref[:, 1:], "deep": ref}[names[0]]
        np.testing.assert_allclose(vectors, expected, atol=1e-4, rtol=0)
    assert encoder.exporting == [deep], "every answer above came while the export was still held"
    assert encoder.exported_depths == [0, layers - 1]

    # the export lands: calls for the new prefix switch to its depth (fewer layer-rows), same vectors
    exporter.gate.set()
    wait_until(lambda: str(deep) in client.get("/info").json()["engine"]["onnx_files"], 600, "the export")
    before = metric_value(client.get("/metrics").text, "prefix_embed_layer_rows_total")
    np.testing.assert_allclose(embed(client, want), ref, atol=1e-4, rtol=0)
    rows_at_deep = metric_value(client.get("/metrics").text, "prefix_embed_layer_rows_total") - before
    n = len(TEXTS)
    assert rows_at_0 == n * 2 * layers  # both rows through every layer
    assert rows_at_deep == n * (deep + 2 * (layers - deep))  # the trunk once, then two rows
    assert exporter.asked == [layers - 1, deep]  # exported once
