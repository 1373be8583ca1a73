"""What the vector cache adds per request when nothing repeats (issue 25, BENCHMARKS.md "Vector
cache"): the embedding pipeline on the fake encoder (no model time), 1,000 unique one-text requests
at concurrency 32, cache on (64 MiB) vs off, in interleaved blocks; the median difference per request
is the cache's bookkeeping (keys, lookups, inserts).

    python -m scripts.cache.overhead [ROUNDS]     # from the repository root
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from service.batching import Batcher
from service.bench.texts import sample_texts
from service.pipeline import EmbeddingPipeline
from service.registry.registry import PrefixRegistry
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.prefixes import write_prefix

CONCURRENCY = 32
ON_BYTES = 64 << 20


async def block(registry: PrefixRegistry, cache_bytes: int, texts: list[str]) -> float:
    """Seconds per request for ``texts`` sent one per request at CONCURRENCY."""
    batcher = Batcher(FakeEncoder())
    await batcher.start()
    pipeline = EmbeddingPipeline(registry, batcher, served_name="x", cache_bytes=cache_bytes)
    selection = pipeline.select(pipeline.snapshot(), ["alpha"])
    queue = list(texts)

    async def worker() -> None:
        while queue:
            await pipeline.embed([queue.pop()], selection)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    took = time.perf_counter() - t0
    await batcher.stop()
    return took / len(texts)


def main(rounds: int) -> None:
    folder = Path(tempfile.mkdtemp())
    write_prefix(folder, "alpha", FAKE_SPEC)
    registry = PrefixRegistry(folder, FAKE_SPEC)
    registry.load()
    res: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        order = (("off", 0), ("on", ON_BYTES)) if r % 2 == 0 else (("on", ON_BYTES), ("off", 0))
        for name, cache_bytes in order:
            texts = sample_texts(1000, seed=100 * r + (cache_bytes > 0))
            res[name].append(asyncio.run(block(registry, cache_bytes, texts)))
    on, off = statistics.median(res["on"]), statistics.median(res["off"])
    print(f"per request: off {off * 1e6:.0f} us, on {on * 1e6:.0f} us, cache adds {(on - off) * 1e6:.0f} us")
    print("rounds on/off:", [round(a / b, 3) for a, b in zip(res["on"], res["off"], strict=True)])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
