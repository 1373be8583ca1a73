"""Model FLOPs of the prefixed forward and model-FLOPs utilization (MFU = achieved / peak).

Counted per row (one text under one prefix) for a BERT-style encoder with ``T`` real text tokens
and a prefix of ``Lp`` positions (its K/V are given, so they cost no projection):
per layer, Q/K/V/output projections ``8 T h^2``, feed-forward ``4 T h f``, and attention scores
plus weighted values ``4 T (T + Lp) h`` (multiply-add = 2 FLOPs). Embeddings and pooling are
negligible and left out. Only real tokens count: padding is waste, not useful model FLOPs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from service.engine.backbone import BackboneSpec

# Dense (no sparsity) peak tensor throughput, FLOP/s, from the vendors' data sheets.
PEAK_FLOPS = {
    ("H100", "bfloat16"): 989e12,  # SXM; PCIe is 756e12
    ("H100", "float16"): 989e12,
    ("H200", "bfloat16"): 989e12,
    ("H200", "float16"): 989e12,
    ("A100", "bfloat16"): 312e12,
    ("A100", "float16"): 312e12,
    ("L4", "bfloat16"): 121e12,
    ("L4", "float16"): 121e12,
    ("A10", "bfloat16"): 125e12,
    ("A10", "float16"): 125e12,
}


def row_flops(spec: BackboneSpec, intermediate_size: int, text_tokens: int, prefix_len: int) -> float:
    h, t = spec.hidden_size, text_tokens
    per_layer = 8 * t * h * h + 4 * t * h * intermediate_size + 4 * t * (t + prefix_len) * h
    return float(spec.num_layers * per_layer)


def batch_flops(
    spec: BackboneSpec, intermediate_size: int, lengths: Iterable[int], prefix_len: int, prefixes: int
) -> float:
    """Useful FLOPs of texts with ``lengths`` each under ``prefixes`` prefixes."""
    return prefixes * sum(row_flops(spec, intermediate_size, n, prefix_len) for n in lengths)


def peak_flops(device: str, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, where the number comes from). GPUs: the data sheet; CPU: a measured matmul."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        for (gpu, dt), peak in PEAK_FLOPS.items():
            if gpu in name and dt == dtype:
                return peak, f"data sheet, {gpu} dense {dt}"
        return measured_matmul_flops(device, dtype), f"measured matmul on {name} (not in the table)"
    return measured_matmul_flops(device, dtype), "measured 2048x2048 matmul on this CPU"


def measured_matmul_flops(device: str, dtype: str, n: int = 2048, repeats: int = 5) -> float:
    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
