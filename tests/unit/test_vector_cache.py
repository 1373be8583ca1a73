"""The vector cache in the pipeline: exact hits, invalidation by digest, the byte budget, and partial
hits computed in one pass for what is missing."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.batching import Batcher
from service.cache import ENTRY_OVERHEAD, VectorCache, entry_bytes
from service.pipeline import Embedded, EmbeddingPipeline
from service.registry.registry import PrefixRegistry
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.http import fake_app, fill_folder
from tests.support.metrics import metric_value
from tests.support.prefixes import write_prefix


class Harness:
    """A pipeline with a cache over a fake encoder and a real registry of three prefixes."""

    def __init__(self, folder: Path, cache_bytes: int = 1 << 20) -> None:
        for i, name in enumerate(("alpha", "beta", "gamma")):
            write_prefix(folder, name, FAKE_SPEC, seed=i)
        self.folder = folder
        self.registry = PrefixRegistry(folder, FAKE_SPEC)
        self.registry.load()
        self.fake = FakeEncoder()
        self.pipeline = EmbeddingPipeline(
            self.registry, Batcher(self.fake), served_name="fake", cache_bytes=cache_bytes
        )

    def embed(self, texts: list[str], names: list[str], truncate: bool = True) -> Embedded:
        self.pipeline.batcher = Batcher(self.fake)  # a batcher per event loop; the cache stays

        async def main() -> Embedded:
            await self.pipeline.batcher.start()
            try:
                sel = self.pipeline.select(self.pipeline.snapshot(), names)
                return await self.pipeline.embed(texts, sel, truncate=truncate)
            finally:
                await self.pipeline.batcher.stop()

        self.fake.calls.clear()
        return asyncio.run(main())

    def expected(self, texts: list[str], names: list[str]) -> np.ndarray:
        bank = self.registry.snapshot.bank
        return np.stack([[self.fake.expected(t, bank.get(n)) for n in names] for t in texts])


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_cached_vector_is_bit_identical_and_costs_no_model_call(h: Harness) -> None:
    texts, names = ["the first text", "a second one"], ["alpha", "base", "gamma"]
    first = h.embed(texts, names)
    assert len(h.fake.calls) == 1
    again = h.embed(texts, names)
    assert h.fake.calls == []  # never entered the batcher
    np.testing.assert_array_equal(again.vectors, first.vectors)
    np.testing.assert_array_equal(first.vectors, h.expected(texts, names))
    assert again.prompt_tokens == first.prompt_tokens == 5 + 5


def test_mixed_cached_and_new_texts_compute_only_the_new_ones_in_one_pass(h: Harness) -> None:
    h.embed(["seen before"], ["alpha", "beta"])
    texts = ["new one", "seen before", "another new text", "new one"]
    out = h.embed(texts, ["alpha", "beta"])
    assert [c.texts for c in h.fake.calls] == [("new one", "another new text")]  # each new text once
    assert [c.names for c in h.fake.calls] == [("alpha", "beta")]  # both prefixes in that one pass
    np.testing.assert_array_equal(out.vectors, h.expected(texts, ["alpha", "beta"]))


def test_a_partly_cached_text_computes_only_its_missing_prefixes(h: Harness) -> None:
    h.embed(["a text"], ["alpha"])
    out = h.embed(["a text"], ["alpha", "beta", "gamma"])
    assert [c.names for c in h.fake.calls] == [("beta", "gamma")]
    np.testing.assert_array_equal(out.vectors, h.expected(["a text"], ["alpha", "beta", "gamma"]))


def test_replacing_a_prefix_makes_its_old_vectors_unreachable_and_keeps_its_neighbours(h: Harness) -> None:
    h.embed(["one", "two"], ["alpha", "beta"])
    write_prefix(h.folder, "alpha", FAKE_SPEC, seed=77)  # a new version: a new digest
    h.registry.refresh()
    out = h.embed(["one", "two"], ["alpha", "beta"])
    assert [c.names for c in h.fake.calls] == [("alpha",)]  # beta still cached, alpha recomputed
    np.testing.assert_array_equal(out.vectors, h.expected(["one", "two"], ["alpha", "beta"]))


def test_truncation_is_part_of_the_key(h: Harness) -> None:
    long = " ".join(f"w{i}" for i in range(40))  # over the fake's 32-token limit
    h.embed([long], ["alpha"], truncate=True)
    with pytest.raises(Exception, match="limit of 32"):
        h.embed([long], ["alpha"], truncate=False)  # never answered from the truncated entry


def test_the_byte_budget_holds_under_a_flood_of_distinct_texts(tmp_path: Path) -> None:
    budget = 64 * 1024
    h = Harness(tmp_path, cache_bytes=budget)
    for i in range(20):
        h.embed([f"flood text number {i} {j}" for j in range(30)], ["alpha", "beta", "base"])
        assert h.pipeline.cache.bytes <= budget
    stats = h.pipeline.cache.stats()
    assert stats.evictions > 0
    assert stats.entries * (8 * 4 + ENTRY_OVERHEAD) <= budget  # what is left fits the budget


def test_the_charged_bytes_cover_what_entries_really_take() -> None:
    """ENTRY_OVERHEAD is honest: tracemalloc's count of the memory a full cache holds stays below what
    the cache charges for it."""
    cache = VectorCache(1 << 30)
    vectors = np.random.default_rng(0).standard_normal((2000, 384)).astype(np.float32)
    texts = [f"a text of moderate length, number {i:05d}" for i in range(2000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, text in enumerate(texts):
        cache.put((text, "d" * 64, "mean:4|cut|256"), vectors[i], 12)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used <= cache.bytes, (used, cache.bytes)
    assert cache.bytes == sum(entry_bytes((t, "", ""), vectors[i]) for i, t in enumerate(texts))


def test_cache_metrics_over_http(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, vector_cache_bytes=1 << 20) as (client, fake, _):
        body = {"inputs": ["same text", "other text"], "prefixes": ["alpha", "beta"]}
        first = client.post("/embed", json=body).json()
        assert client.post("/embed", json=body).json() == first
        assert len(fake.calls) == 1
        text = client.get("/metrics").text
        assert metric_value(text, "prefix_embed_vector_cache_total", {"event": "miss"}) == 4
        assert metric_value(text, "prefix_embed_vector_cache_total", {"event": "hit"}) == 4
        assert metric_value(text, "prefix_embed_vector_cache_entries") == 4
        assert metric_value(text, "prefix_embed_vector_cache_bytes") > 4 * 8 * 4


def test_zero_bytes_turns_the_cache_off(tmp_path: Path) -> None:
    h = Harness(tmp_path, cache_bytes=0)
    h.embed(["x y"], ["alpha"])
    h.embed(["x y"], ["alpha"])
    assert len(h.fake.calls) == 1
    assert len(h.pipeline.cache) == 0
