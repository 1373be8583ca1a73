"""ONNX Runtime vs torch on the same rows, in one process: parity, then interleaved timed rounds.

The machine is shared, so the two backends alternate within every round (and swap who goes first each
round); the ratio reported is the median of the per-round ratios, which cancels most of the drift in
background load. The load average before and after is part of the result. As in the service, the
texts are sorted by length (the batcher does) and the calls run on a worker thread (the batcher's
worker; on this VM the main thread was measured ~2x slower for the same torch calls, BENCHMARKS.md).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch

from service.backend import build_onnx_encoder, build_torch_encoder
from service.bench.engine import random_prefixes
from service.bench.texts import sample_texts
from service.config import Settings
from service.engine.bank import PrefixBank


def _timed(fn: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread, spin-waiting included)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def run_onnx_bench(
    settings: Settings,
    *,
    n_texts: int,
    n_prefixes: int,
    prefix_len: int,
    rounds: int,
    threads: int | None = None,
) -> dict[str, Any]:
    """``rounds`` interleaved timings of ``encode`` (B texts x P prefixes) on both backends.

    ``threads``: intra-op threads of both (None: torch's and ORT's defaults)."""
    load_before = os.getloadavg()
    if threads:
        torch.set_num_threads(threads)
    torch_enc = build_torch_encoder(settings.model_copy(update={"backend": "torch"}))
    export_start = time.perf_counter()
    onnx_enc = build_onnx_encoder(settings, threads=threads)
    export_s = time.perf_counter() - export_start
    spec = torch_enc.spec
    bank = PrefixBank.build(
        random_prefixes(n_prefixes, prefix_len, spec.num_layers, spec.num_heads, spec.head_dim)
    )
    slots = list(range(n_prefixes))
    texts = sorted(sample_texts(n_texts), key=len)
    batch = torch_enc.tokenize(texts, max_length=torch_enc.max_input_tokens, truncate=True)
    rows = n_texts * n_prefixes

    def measure() -> tuple[
        np.ndarray, np.ndarray, dict[str, int], dict[str, list[float]], dict[str, list[float]]
    ]:
        before = {"torch": torch_enc.forward_calls, "onnx": onnx_enc.forward_calls}
        ref = torch_enc.encode(batch, bank, slots)  # also the warm-up
        got = onnx_enc.encode(batch, bank, slots)
        calls = {
            "torch": torch_enc.forward_calls - before["torch"],
            "onnx": onnx_enc.forward_calls - before["onnx"],
        }
        runs = {
            "torch": lambda: torch_enc.encode(batch, bank, slots),
            "onnx": lambda: onnx_enc.encode(batch, bank, slots),
        }
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        cpu: dict[str, list[float]] = {"torch": [], "onnx": []}
        for r in range(rounds):
            for name in ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch"):
                wall, used = _timed(runs[name])
                times[name].append(wall)
                cpu[name].append(used)
        return ref, got, calls, times, cpu

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ref, got, calls, times, cpu = pool.submit(measure).result()
    ratios = [t / o for t, o in zip(times["torch"], times["onnx"], strict=True)]
    median = {k: statistics.median(v) for k, v in times.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "torch": {
            "version": torch.__version__,
            "device": torch_enc.device,
            "dtype": torch_enc.dtype,
            "threads": torch.get_num_threads(),
            "chunk_rows": torch_enc.chunk_rows,
        },
        "onnx": {
            "providers": onnx_enc.providers,
            "device": onnx_enc.device,
            "dtype": onnx_enc.dtype,
            "chunk_rows": onnx_enc.chunk_rows,
            "threads": threads or "ORT default (physical cores)",
            "file": str(onnx_enc.onnx_path),
            "export_or_load_s": round(export_s, 2),
            **onnx_enc.export_info,
        },
        "B": n_texts,
        "P": n_prefixes,
        "prefix_len": prefix_len,
        "rows": rows,
        "padded_len": batch.padded_len,
        "forward_calls_per_encode": calls,
        "max_abs_diff": float(np.abs(got - ref).max()),
        "rounds": rounds,
        "seconds_median": {k: round(v, 4) for k, v in median.items()},
        "rows_per_s": {k: round(rows / v, 1) for k, v in median.items()},
        "cpu_seconds_median": {k: round(v, 4) for k, v in cpu_median.items()},
        "cpu_ratio_torch_vs_onnx": round(cpu_median["torch"] / cpu_median["onnx"], 3),
        "ratio_per_round": [round(x, 3) for x in ratios],
        "speedup_onnx_vs_torch": round(statistics.median(ratios), 3),
    }
