"""The adaptive call plan on the ONNX backend (tiny random BERT, CPU): a call that runs alone gets a
second session with every CPU, opened on the first such call (not at start, not by warm-up, not by
calls side by side), and its vectors equal the torch engine's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.backend import build_onnx_encoder
from service.config import Settings
from service.engine import ort_runtime
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.onnx_encoder import OnnxEncoder
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from service.runtime import warm_up
from tests.support.prefixes import random_kv

pytestmark = pytest.mark.slow  # one ONNX export of the tiny model

TEXTS = ["one text alone", "and a second, longer text beside it"]
TOL = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")  # one export for both tests


def cpu_encoder(model: Path, cache: Path, onnx_threads: int | None = None) -> OnnxEncoder:
    """The float32 ONNX backend on the CPU (``onnx_threads`` None: the default, adaptive plan)."""
    settings = Settings(model=model, backend="onnx", device="cpu", dtype="float32", onnx_cache_dir=cache)
    return build_onnx_encoder(settings.model_copy(update={"onnx_threads": onnx_threads}))


def one_prefix(backbone: Backbone) -> PrefixBank:
    key, value = random_kv(backbone.spec, 4, seed=1)
    return PrefixBank.build([LoadedPrefix("p", "d1", key, value, "none", "<test>", "native")])


def test_lone_session_opens_on_the_first_lone_call_only(
    tiny_bert_path: Path, tiny_bert: Backbone, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_runtime, "available_cpus", lambda: 2)  # the default plan: 2 calls x 1 thread
    enc = cpu_encoder(tiny_bert_path, cache)
    assert (enc.parallel_calls, enc.intra_op_threads, enc.lone_call_threads) == (2, 1, 2)
    bank = one_prefix(tiny_bert)
    want = TorchEncoder(tiny_bert, chunk_rows=0).encode(
        enc.tokenize(TEXTS, max_length=32, truncate=True), bank, [0]
    )

    warm_up(enc, bank)
    assert enc.lone_session_depths == []  # warm-up runs its calls side by side

    both = enc.encode(enc.tokenize(TEXTS, max_length=32, truncate=True), bank, [0])
    enc.wait_for_exports()
    np.testing.assert_allclose(both, want, atol=TOL, rtol=0)
    assert enc.lone_session_depths == []  # two texts: two calls side by side, no lone session

    one = enc.tokenize(TEXTS[:1], max_length=32, truncate=True)
    first = enc.encode(one, bank, [0])  # alone: runs on the shared session, opens the lone one
    enc.wait_for_exports()
    assert enc.lone_session_depths == [0]
    assert enc.describe()["lone_call_sessions"] == [0]
    second = enc.encode(one, bank, [0])  # alone, on the lone session (every CPU)
    np.testing.assert_allclose(first, want[:1], atol=TOL, rtol=0)
    np.testing.assert_allclose(second, want[:1], atol=TOL, rtol=0)


def test_a_fixed_plan_never_opens_a_second_session(
    tiny_bert_path: Path, tiny_bert: Backbone, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_runtime, "available_cpus", lambda: 2)
    enc = cpu_encoder(tiny_bert_path, cache, onnx_threads=1)  # explicit: the fixed plan, 1 thread a call
    assert enc.lone_call_threads is None
    batch = enc.tokenize(TEXTS[:1], max_length=32, truncate=True)
    bank = one_prefix(tiny_bert)
    warm_up(enc, bank)
    enc.encode(batch, bank, [0])
    enc.wait_for_exports()
    assert enc.lone_session_depths == []
