"""Shared-trunk benchmark: text x prefix vectors/s for P prefixes starting at layer S, against
all-layer prefixes (S = 0) at the same P, every (P, S) variant interleaved in one run.

A prefix with first_layer S runs layers 0..S-1 once per text and S..L-1 once per (text, prefix)
row, so its work is S + P (L - S) layer-rows per text against P L: :func:`layer_ratio` is the
speed-up the layer count predicts, printed beside the measured one.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from service.backend import build_torch_encoder
from service.bench.engine import time_interleaved, torch_device_record
from service.bench.texts import sample_texts
from service.config import Settings
from service.engine.bank import PrefixBank
from service.engine.forward import layer_rows
from service.engine.prefix import LoadedPrefix

PREFIX_COUNTS = (1, 2, 4, 8, 16)


def trunk_depths(num_layers: int) -> list[int]:
    """S in {0, L/2, L-2, L-1} (distinct, sorted)."""
    return sorted({0, num_layers // 2, max(0, num_layers - 2), num_layers - 1})


def layer_ratio(num_layers: int, depth: int, prefixes: int) -> float:
    """Layer-rows of all-layer prefixes over those of prefixes starting at ``depth`` (per text)."""
    return layer_rows(num_layers, 0, 1, prefixes) / layer_rows(num_layers, depth, 1, prefixes)


def trunk_prefixes(
    n: int, depth: int, prefix_len: int, layers: int, heads: int, head_dim: int, seed: int = 0
) -> list[LoadedPrefix]:
    """Random unshifted prefixes acting in layers depth..L-1 (same values for every depth)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        key = torch.randn(layers, heads, prefix_len, head_dim, generator=g)[depth:] * 0.5
        value = torch.randn(layers, heads, prefix_len, head_dim, generator=g)[depth:] * 0.5
        out.append(
            LoadedPrefix(
                f"s{depth}p{i:02d}",
                f"bench-s{depth}-{i}",
                key,
                value,
                "none",
                "<bench>",
                "native",
                first_layer=depth,
            )
        )
    return out


def _encode_call(encode: Callable[..., object], *args: object) -> Callable[[], object]:
    return lambda: encode(*args)


def _model_name(path: Path) -> str:
    # the packaged default model lives in .../<package>/model
    return path.parent.name if path.name == "model" else path.name


def run_trunk_bench(
    settings: Settings,
    *,
    n_texts: int = 32,
    prefix_counts: Sequence[int] = PREFIX_COUNTS,
    depths: Sequence[int] | None = None,
    prefix_len: int = 16,
    repeats: int = 3,
) -> dict[str, Any]:
    enc = build_torch_encoder(settings)
    spec = enc.spec
    layers = spec.num_layers
    depths = list(depths) if depths is not None else trunk_depths(layers)
    texts = sample_texts(n_texts)
    batch = enc.tokenize(texts, max_length=enc.max_input_tokens, truncate=True)
    # sorted by length, as the batcher hands batches to the encoder
    batch = batch.take(sorted(range(batch.size), key=lambda i: batch.lengths[i]))
    variants: dict[str, Callable[[], object]] = {}
    for p in prefix_counts:
        for s in depths:
            bank = PrefixBank.build(trunk_prefixes(p, s, prefix_len, layers, spec.num_heads, spec.head_dim))
            slots = list(range(p))
            variants[f"P{p}-S{s}"] = _encode_call(enc.encode, batch, bank, slots)
    # on a worker thread, as the service's batcher runs the encoder
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        seconds = pool.submit(time_interleaved, variants, repeats).result()
    rows = []
    for p in prefix_counts:
        for s in depths:
            t = seconds[f"P{p}-S{s}"]
            rows.append(
                {
                    "P": p,
                    "S": s,
                    "vectors_per_s": round(n_texts * p / t, 2),
                    "seconds": round(t, 4),
                    "ratio_to_S0": round(seconds[f"P{p}-S{depths[0]}"] / t, 3),
                    "layer_ratio": round(layer_ratio(layers, s, p), 3),
                }
            )
    return {
        **torch_device_record(enc.device, enc.dtype),
        "model": _model_name(settings.model_path()),
        "layers": layers,
        "B": n_texts,
        "prefix_len": prefix_len,
        "padded_len": batch.padded_len,
        "chunk_rows": enc.chunk_rows,
        "group_by_depth": enc.group_by_depth,
        "repeats": repeats,
        "rows": rows,
    }


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| P | S | vectors/s | ratio to S=0 (measured) | layer-count ratio | measured / layer ratio |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['P']} | {r['S']} | {r['vectors_per_s']:.1f} | {r['ratio_to_S0']:.2f}x | "
            f"{r['layer_ratio']:.2f}x | {r['ratio_to_S0'] / r['layer_ratio']:.2f} |"
        )
    return "\n".join(lines)


def plot_trunk(result: dict[str, Any], path: Path) -> Path | None:
    """vectors/s against P, one line per S; None (and nothing written) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    depths = sorted({r["S"] for r in result["rows"]})
    for k, s in enumerate(depths):
        rs = [r for r in result["rows"] if r["S"] == s]
        ps = [r["P"] for r in rs]
        color = f"C{k}"
        axes[0].plot(ps, [r["vectors_per_s"] for r in rs], "o-", color=color, label=f"S = {s}")
        if s:
            axes[1].plot(ps, [r["ratio_to_S0"] for r in rs], "o-", color=color, label=f"S = {s} measured")
            axes[1].plot(ps, [r["layer_ratio"] for r in rs], "--", color=color, label=f"S = {s} layer count")
    for ax, label in zip(
        axes, ("vectors (text x prefix) / s", "speed-up over S = 0 at the same P"), strict=True
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(PREFIX_COUNTS), [str(p) for p in PREFIX_COUNTS])
        ax.set_xlabel("prefixes per text (P)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"shared trunk: {result['model']}, L = {result['layers']}, B = {result['B']}, {result['device']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
