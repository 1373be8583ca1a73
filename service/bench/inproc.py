"""In-process measurements: the raw encoder on the benchmark's texts, and the batcher's slot policy."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from typing import Any

from service.batching import Batcher, SlotPolicy
from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder


def raw_encoder_rate(
    enc: Encoder, bank: PrefixBank, texts: list[str], slots: list[int], *, batch_texts: int = 64
) -> dict[str, Any]:
    """Vectors/s of ``enc.encode`` alone, ``batch_texts`` texts per call, each call's texts sorted by
    length as the batcher sorts them; tokenization outside the timer. One small warm-up call first."""
    batches = []
    for i in range(0, len(texts), batch_texts):
        part = sorted(texts[i : i + batch_texts], key=len)
        batches.append(enc.tokenize(part, max_length=enc.max_input_tokens, truncate=True))

    def run() -> float:
        enc.encode(batches[0].take(range(min(4, batches[0].size))), bank, slots)  # warm-up, small
        start = time.perf_counter()
        for b in batches:
            enc.encode(b, bank, slots)
        return time.perf_counter() - start

    # On a worker thread, like the batcher's: on this VM the same calls ran ~2x slower on the
    # main thread (glibc's main arena returns freed memory to the OS; see BENCHMARKS.md).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        seconds = pool.submit(run).result()
    tokens = sum(sum(b.lengths) for b in batches)
    return {
        "texts": len(texts),
        "prefixes": len(slots),
        "seconds": round(seconds, 3),
        "vectors_per_s": round(len(texts) * len(slots) / seconds, 1),
        "text_tokens": tokens,
        "lengths": [n for b in batches for n in b.lengths],
    }


async def _drive(
    batcher: Batcher, bank: PrefixBank, work: list[tuple[str, list[int]]], concurrency: int
) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str, slots: list[int]) -> None:
        async with gate:
            await batcher.embed([text], bank, slots)

    start = time.perf_counter()
    await asyncio.gather(*(one(t, s) for t, s in work))
    return time.perf_counter() - start


def slot_policy_rates(
    enc: Encoder,
    bank: PrefixBank,
    texts: list[str],
    n_prefixes: int,
    *,
    max_batch_tokens: int,
    concurrency: int = 64,
) -> dict[str, Any]:
    """Vectors/s of the batcher under ``group`` and ``union`` on two mixes of prefix sets:
    ``split`` (every text asked once per prefix, one prefix each: disjoint sets) and ``mixed``
    (half the requests ask all P, half a random half of them: overlapping sets)."""
    rng = random.Random(0)
    all_slots = list(range(n_prefixes))
    mixes = {
        "split": [(t, [s]) for t in texts for s in all_slots],
        "mixed": [
            (t, all_slots if i % 2 else sorted(rng.sample(all_slots, max(1, n_prefixes // 2))))
            for i, t in enumerate(texts)
        ],
    }
    out: dict[str, Any] = {}
    for mix, work in mixes.items():
        vectors = sum(len(s) for _, s in work)
        policies: tuple[SlotPolicy, ...] = ("group", "union")
        for pol in policies:
            batcher = Batcher(enc, max_batch_tokens=max_batch_tokens, slot_policy=pol, timeout_s=600)

            async def run(b: Batcher = batcher, w: list[tuple[str, list[int]]] = work) -> float:
                seconds = await _drive(b, bank, w, concurrency)
                await b.stop()
                return seconds

            seconds = asyncio.run(run())
            out[f"{mix}/{pol}"] = {
                "requests": len(work),
                "vectors_per_s": round(vectors / seconds, 1),
                "forward_calls": batcher.stats.forward_calls,
                "rows_computed": batcher.stats.forward_rows,
                "rows_needed": vectors,
            }
    return out
