"""The many-task request, priced (issue 27 item 4): P vectors per text from ours against one model per task.

Ours: one ``/embed`` request per batch of texts with P prefixes (``base`` plus P - 1 shipped prefixes,
shared-trunk from layer S), all computed in the same forward calls. The peer, infinity-emb, serving
one fine-tuned model per task, is emulated by P sequential requests for the same texts to its one
MiniLM (every task a full pass: P x L layer-rows per text). Each client worker sends its batch of
texts and, for the peer, its P requests one after another; texts/s counts each text once.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.engine.forward import layer_rows


@dataclass(frozen=True)
class ManyTaskTarget:
    name: str
    kind: str  # ours | peer
    base_url: str
    model: str  # the peer's model name (ours: unused)


def _bodies(
    target: ManyTaskTarget, texts: list[str], names: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    if target.kind == "ours":
        return [("/embed", {"inputs": texts, "prefixes": list(names), "encoding": "float"})]
    body = {"model": target.model, "input": texts, "encoding_format": "float"}
    return [("/embeddings", body)] * len(names)


async def _run(
    target: ManyTaskTarget,
    batches: list[list[str]],
    names: Sequence[str],
    concurrency: int,
    time_limit_s: float,
) -> dict[str, Any]:
    queue = list(batches)
    done_texts = 0
    errors = 0
    deadline = time.monotonic() + time_limit_s
    async with httpx.AsyncClient(base_url=target.base_url, timeout=time_limit_s) as client:

        async def worker() -> None:
            nonlocal done_texts, errors
            while queue and time.monotonic() < deadline:
                texts = queue.pop()
                ok = True
                for path, body in _bodies(target, texts, names):  # the peer's P requests in sequence
                    r = await client.post(path, json=body)
                    ok = ok and r.status_code == 200
                done_texts += len(texts) if ok else 0
                errors += 0 if ok else 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {"texts": done_texts, "errors": errors, "seconds": round(seconds, 3)}


def layer_rows_per_text(kind: str, layers: int, trunk_depth: int, p: int) -> int:
    """The peer: P full passes. Ours: base alone fans out at L - 1; with P - 1 prefixes of depth S,
    the trunk once and P rows above it (base rides along)."""
    if kind == "peer":
        return layers * p
    return layer_rows(layers, layers - 1 if p == 1 else trunk_depth, 1, p)


def run_many_tasks(
    targets: Sequence[ManyTaskTarget],
    texts: Sequence[str],
    names: Sequence[str],
    *,
    prefix_counts: Sequence[int],
    layers: int,
    trunk_depth: int,
    rounds: int,
    record: Callable[[str, dict[str, Any]], Any],
    texts_per_request: int = 32,
    concurrency: int = 4,
    requests: int = 4,
    time_limit_s: float = 300.0,
) -> None:
    """For each P in ``prefix_counts`` (``names[:P]``: ``base`` first), each target, interleaved over
    ``rounds`` (target order reversed every round); one phase ``many_tasks`` per measurement."""
    batches = [
        [texts[(i * texts_per_request + j) % len(texts)] for j in range(texts_per_request)]
        for i in range(requests)
    ]
    for rnd in range(rounds):
        order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
        for p in prefix_counts:
            for t in order:
                res = asyncio.run(_run(t, batches, names[:p], concurrency, time_limit_s))
                rate = res["texts"] / res["seconds"] if res["seconds"] else 0.0
                rows = layer_rows_per_text(t.kind, layers, trunk_depth, p)
                record(
                    "many_tasks",
                    {
                        "round": rnd,
                        "target": t.name,
                        "P": p,
                        **res,
                        "texts_per_s": round(rate, 2),
                        "vectors_per_s": round(rate * p, 2),
                        "layer_rows_per_text": rows,
                    },
                )


def many_task_summary(phases: Sequence[dict[str, Any]], peers: Sequence[str]) -> dict[str, Any]:
    """Median texts/s and vectors/s per (target, P), and each of ours / the fastest peer per round."""
    rows = [p for p in phases if p["phase"] == "many_tasks"]
    rate = {(r["round"], r["target"], r["P"]): r["texts_per_s"] for r in rows}
    out: dict[str, Any] = {}
    for t in sorted({r["target"] for r in rows}):
        for p in sorted({r["P"] for r in rows}):
            mine = [r for r in rows if r["target"] == t and r["P"] == p]
            if mine:
                out.setdefault(t, {})[str(p)] = {
                    "texts_per_s": statistics.median(r["texts_per_s"] for r in mine),
                    "vectors_per_s": statistics.median(r["vectors_per_s"] for r in mine),
                    "layer_rows_per_text": mine[0]["layer_rows_per_text"],
                }
                if t in peers:
                    continue
                ratios = [
                    round(rate[(r["round"], t, p)] / best, 3)
                    for r in mine
                    if (best := max((rate.get((r["round"], q, p), 0.0) for q in peers), default=0.0))
                ]
                if ratios:
                    out[t][str(p)]["vs_fastest_peer"] = {
                        "median": statistics.median(ratios),
                        "rounds": ratios,
                    }
    return out


def plot_many_tasks(summary: dict[str, Any], path: Path, title: str) -> Path:
    """Texts/s (left) and vectors/s (right) against P for every target of :func:`many_task_summary`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("texts_per_s", "vectors_per_s"), strict=True):
        for name, by_p in sorted(summary.items()):
            ps = sorted(int(p) for p in by_p)
            label = name if name.startswith("ours") else f"{name}, one model per task"
            ax.plot(
                ps, [by_p[str(p)][key] for p in ps], "o-" if name.startswith("ours") else "s--", label=label
            )
        ax.set_xlabel("vectors per text (P: base + P-1 prefixes / P models)")
        ax.set_ylabel(key.replace("_per_s", " / s"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
