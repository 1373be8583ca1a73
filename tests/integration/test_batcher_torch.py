"""The batcher over the real torch encoder (tiny random BERT): same vectors as one direct call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.batching import Batcher
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.torch_encoder import TorchEncoder
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits

TEXTS = [
    "short",
    "a much longer text that needs quite a few more tokens than the others do",
    "medium length text here",
    "another one",
]


@pytest.fixture(scope="module")
def encoder(tiny_bert: Backbone) -> TorchEncoder:
    return TorchEncoder(tiny_bert)


@pytest.fixture
def bank(tmp_path: Path, tiny_bert: Backbone, write_prefix, encoder: TorchEncoder) -> PrefixBank:  # type: ignore[no-untyped-def]
    for i, name in enumerate(["p1", "p2", "p3"]):
        write_prefix(tmp_path, name, tiny_bert.spec, prefix_len=2 + 2 * i, seed=i)
    loaded, rejected = scan_folder(
        tmp_path, tiny_bert.spec, PrefixLimits(max_prefix_len=64, max_file_bytes=1 << 20)
    )
    assert not rejected
    return PrefixBank.build(loaded)


def test_concurrent_requests_match_direct_encoding(encoder: TorchEncoder, bank: PrefixBank) -> None:
    batcher = Batcher(encoder)
    names = ["p3", "p1", "p2"]

    async def scenario() -> list[np.ndarray]:
        outs = await asyncio.gather(*(batcher.embed([t], bank, bank.indices(names)) for t in TEXTS))
        await batcher.stop()
        return [o.vectors[0] for o in outs]

    got = asyncio.run(scenario())
    for text, vec in zip(TEXTS, got, strict=True):
        ref, _ = embed_sync(encoder, bank, names, [text])
        np.testing.assert_allclose(vec, ref[0], atol=2e-5, rtol=1e-4)


def test_one_request_with_every_prefix_is_one_forward_call(encoder: TorchEncoder, bank: PrefixBank) -> None:
    batcher = Batcher(encoder)
    names = ["p1", "p2", "p3"]

    async def scenario() -> np.ndarray:
        out = await batcher.embed(TEXTS, bank, bank.indices(names))
        await batcher.stop()
        return out.vectors

    before = encoder.forward_calls
    vectors = asyncio.run(scenario())
    assert encoder.forward_calls - before == 1
    assert batcher.stats.forward_calls == 1
    assert batcher.stats.forward_rows == len(TEXTS) * len(names)
    ref, _ = embed_sync(encoder, bank, names, TEXTS)
    np.testing.assert_allclose(vectors, ref, atol=2e-5, rtol=1e-4)
