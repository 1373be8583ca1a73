"""Engine benchmark: one batched call of B*P rows vs P calls of B rows vs the plain backbone."""

from __future__ import annotations

import concurrent.futures
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from service.backend import build_torch_encoder
from service.bench.texts import sample_texts
from service.config import Settings
from service.engine.bank import PrefixBank
from service.engine.prefix import LoadedPrefix, base_prefix


def random_prefixes(
    n: int, prefix_len: int, layers: int, heads: int, head_dim: int, seed: int = 0
) -> list[LoadedPrefix]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        key = torch.randn(layers, heads, prefix_len, head_dim, generator=g) * 0.5
        value = torch.randn(layers, heads, prefix_len, head_dim, generator=g) * 0.5
        out.append(LoadedPrefix(f"bench{i:02d}", f"random-{i}", key, value, "peft", "<bench>", "native"))
    return out


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per variant, variants interleaved round-robin so that load drift on a shared
    machine hits all of them alike (ratios are what we report)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run_engine_bench(
    settings: Settings, *, n_texts: int, n_prefixes: int, prefix_len: int, repeats: int
) -> dict[str, Any]:
    enc = build_torch_encoder(settings)
    spec = enc.spec
    bank = PrefixBank.build(
        random_prefixes(n_prefixes, prefix_len, spec.num_layers, spec.num_heads, spec.head_dim)
    )
    slots = list(range(n_prefixes))
    texts = sample_texts(n_texts)
    batch = enc.tokenize(texts, max_length=enc.max_input_tokens, truncate=True)
    rows = n_texts * n_prefixes
    # the same B*P rows in the same order as the batched call (each text repeated P times in a row)
    rows_texts = [t for t in texts for _ in range(n_prefixes)]
    plain_batch = enc.tokenize(rows_texts, max_length=enc.max_input_tokens, truncate=True)
    plain_bank = PrefixBank.build([], base=base_prefix(spec))  # the backbone alone: the `base` member

    def batched() -> object:
        return enc.encode(batch, bank, slots)

    def sequential() -> object:
        return [enc.encode(batch, bank, [s]) for s in slots]

    def plain() -> object:
        return enc.encode(plain_batch, plain_bank, [0])

    def chunked() -> object:
        enc.chunk_rows = chunk
        try:
            return enc.encode(batch, bank, slots)
        finally:
            enc.chunk_rows = one_call

    def plain_chunked() -> object:
        enc.chunk_rows = chunk
        try:
            return enc.encode(plain_batch, plain_bank, [0])
        finally:
            enc.chunk_rows = one_call

    one_call, chunk = enc.chunk_rows, 32
    variants: dict[str, Callable[[], object]] = {"batched": batched, "sequential": sequential, "plain": plain}
    if enc.device == "cpu" and one_call == 0:
        variants["batched_chunk32"] = chunked
        variants["plain_chunk32"] = plain_chunked
    # Timed on a worker thread, as the service's batcher runs the encoder (on this VM the main
    # thread measured up to ~2x slower for the same calls: BENCHMARKS.md, service section).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        t = pool.submit(time_interleaved, variants, repeats).result()
    calls_before = enc.forward_calls
    batched()
    calls_one = enc.forward_calls - calls_before
    return {
        **torch_device_record(enc.device, enc.dtype),
        "B": n_texts,
        "P": n_prefixes,
        "prefix_len": prefix_len,
        "padded_len": batch.padded_len,
        "chunk_rows": enc.chunk_rows,
        "forward_calls_batched": calls_one,
        "rows_per_s": {k: round(rows / v, 1) for k, v in t.items()},
        "seconds": {k: round(v, 4) for k, v in t.items()},
        "speedup_batched_vs_sequential": round(t["sequential"] / t["batched"], 3),
        "prefix_overhead_vs_plain": round(t["batched"] / t["plain"] - 1, 4),
        **(
            {
                "speedup_chunk32_vs_one_call": round(t["batched"] / t["batched_chunk32"], 3),
                "speedup_chunk32_vs_sequential": round(t["sequential"] / t["batched_chunk32"], 3),
                "prefix_overhead_vs_plain_chunk32": round(t["batched_chunk32"] / t["plain_chunk32"] - 1, 4),
            }
            if "batched_chunk32" in t
            else {}
        ),
    }


def torch_device_record(device: str, dtype: str) -> dict[str, Any]:
    """Where a torch benchmark ran: the card (or CPU) by name, torch's threads and the dtype."""
    name = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"
    return {"device": name, "torch_threads": torch.get_num_threads(), "dtype": dtype}
