"""Request-path speed at three load shapes against infinity-emb's engines (issue 13), interleaved.

Shapes, same client, texts and OpenAI-style body (`{"model", "input": [...], "encoding_format":
"float"}`) for every server:

- (a) 1 text per request, concurrency 1 (latency-bound);
- (b) 1 text per request, concurrency 32 (many small concurrent requests: batching);
- (c) 32 texts per request, concurrency 4 (client-side batches).

Every round runs each shape on every server, alternating the server order round by round, so
that load from other tenants drifts over all of them alike; ratios are taken within a round. Each
round also measures our default encoder in-process at shape (b)'s batches (raw) and our server at
shape (b) with P = 8 prefixes per text (text x prefix vectors/s).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.bench.load import Call, run_load
from service.bench.workload import embed_calls
from service.engine.ort_runtime import available_cpus
from service.procs import ServerProcess

# Our servers a shape comparison can run, by label: the environment each adds to the bench's settings.
OUR_VARIANTS: dict[str, dict[str, str]] = {
    "ours": {},  # default settings (backend auto: onnx, float32, the adaptive call plan on CPU)
    "ours_int8": {"PREFIX_EMBED_DTYPE": "int8"},
    "ours_torch": {"PREFIX_EMBED_BACKEND": "torch"},
    # the plan before the adaptive one: every call on one thread, a lone call too
    "ours_fixed_plan": {"PREFIX_EMBED_ONNX_THREADS": "1"},
    # one session per depth with every CPU's thread, for a lone call and for calls side by side alike
    # (no second copy of the weights): the memory-free alternative to the adaptive plan
    "ours_one_session": {"PREFIX_EMBED_ONNX_THREADS": str(available_cpus())},
    # the adaptive plan with spinning intra-op threads (off by default on a shared CPU)
    "ours_spinning": {"PREFIX_EMBED_ONNX_SPINNING": "true"},
}


@dataclass(frozen=True)
class Shape:
    name: str
    texts_per_request: int
    concurrency: int
    requests: int


def default_shapes(scale: float = 1.0, concurrency: int | None = None) -> list[Shape]:
    """Request counts sized for a few seconds to a minute each on a 2-core CPU (``scale`` x).
    ``concurrency``: (b) and (c) at that concurrency instead (a GPU: 256), with enough requests."""
    b_c, c_c = (32, 4) if concurrency is None else (concurrency, concurrency)
    return [
        Shape("a", 1, 1, max(4, int(32 * scale))),
        Shape("b", 1, b_c, max(32, int(160 * scale), 2 * b_c)),
        Shape("c", 32, c_c, max(4, int(8 * scale), 2 * c_c if concurrency else 0)),
    ]


@dataclass
class Target:
    """One server under test: where it listens, the OpenAI route and the model name it wants."""

    name: str
    kind: str  # ours | peer
    base_url: str
    path: str
    model: str
    server: ServerProcess


def shape_calls(texts: Sequence[str], shape: Shape, model: str, path: str) -> list[Call]:
    per = shape.texts_per_request
    need = shape.requests * per
    pool = [texts[i % len(texts)] for i in range(need)]
    return [
        Call(path, {"model": model, "input": pool[i : i + per], "encoding_format": "float"}, per)
        for i in range(0, need, per)
    ]


def run_shapes(
    targets: Sequence[Target],
    texts: Sequence[str],
    shapes: Sequence[Shape],
    *,
    rounds: int,
    raw_b: Callable[[], dict[str, Any]] | None,
    p8: tuple[Target, list[str]] | None,
    record: Callable[[str, dict[str, Any]], Any],
    time_limit_s: float = 300.0,
) -> None:
    """All shapes x targets, ``rounds`` times, alternating the target order; results via ``record``."""
    for t in targets:  # warm-up: a few requests of every shape
        for shape in shapes:
            calls = shape_calls(texts, shape, t.model, t.path)[: max(2, shape.concurrency)]
            asyncio.run(run_load(t.base_url, calls, shape.concurrency, time_limit_s=time_limit_s))
    for rnd in range(rounds):
        order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
        for shape in shapes:
            for t in order:
                calls = shape_calls(texts, shape, t.model, t.path)
                res = asyncio.run(run_load(t.base_url, calls, shape.concurrency, time_limit_s=time_limit_s))
                record("shape", {"round": rnd, "shape": shape.name, "target": t.name, **res.summary()})
        if raw_b is not None:
            record("shape_raw_encoder", {"round": rnd, "shape": "b", **raw_b()})
        if p8 is not None:
            t, names = p8
            b = next(s for s in shapes if s.name == "b")
            calls = embed_calls([texts[i % len(texts)] for i in range(b.requests)], names, "float")
            res = asyncio.run(run_load(t.base_url, calls, b.concurrency, time_limit_s=time_limit_s))
            record(
                "shape_p8", {"round": rnd, "shape": "b", "target": t.name, "P": len(names), **res.summary()}
            )
    for t in targets:
        record("rss", {"target": t.name, "rss_mb": t.server.rss_mb()})


def shape_summary(phases: Sequence[dict[str, Any]], targets: Sequence[Target]) -> dict[str, Any]:
    """Per shape: median vectors/s of every target; ours / infinity's fastest engine per round
    (median and rounds); service / raw encoder at (b); P = 8 vs P = 1 at (b); RSS."""
    ours = [t.name for t in targets if t.kind == "ours"]
    peers = [t.name for t in targets if t.kind == "peer"]
    rows = [p for p in phases if p["phase"] == "shape"]
    out: dict[str, Any] = {"vectors_per_s": {}, "ours_vs_fastest_peer": {}, "rss_mb": {}}
    rate = {(p["round"], p["shape"], p["target"]): p["vectors_per_s"] for p in rows}
    rounds = sorted({p["round"] for p in rows})
    for shape in sorted({p["shape"] for p in rows}):
        out["vectors_per_s"][shape] = {
            t.name: statistics.median(
                [rate[(r, shape, t.name)] for r in rounds if (r, shape, t.name) in rate]
            )
            for t in targets
        }
        for mine in ours:
            per_round = []
            for r in rounds:
                best = max((rate.get((r, shape, p), 0.0) for p in peers), default=0.0)
                if best and (r, shape, mine) in rate:
                    per_round.append(round(rate[(r, shape, mine)] / best, 3))
            if per_round:
                out["ours_vs_fastest_peer"].setdefault(mine, {})[shape] = {
                    "median": statistics.median(per_round),
                    "rounds": per_round,
                }
    for mine in ours[1:]:  # each variant against the default server, per round
        for shape in out["vectors_per_s"]:
            per_round = [
                round(rate[(r, shape, mine)] / rate[(r, shape, ours[0])], 3)
                for r in rounds
                if (r, shape, mine) in rate and rate.get((r, shape, ours[0]))
            ]
            if per_round:
                out.setdefault("vs_default", {}).setdefault(mine, {})[shape] = {
                    "median": statistics.median(per_round),
                    "rounds": per_round,
                }
    if ours:
        raw = {p["round"]: p["vectors_per_s"] for p in phases if p["phase"] == "shape_raw_encoder"}
        per_round = [
            round(rate[(r, "b", ours[0])] / raw[r], 3)
            for r in rounds
            if r in raw and (r, "b", ours[0]) in rate
        ]
        if per_round:
            out["service_vs_raw_b"] = {"median": statistics.median(per_round), "rounds": per_round}
        p8 = {p["round"]: p["vectors_per_s"] for p in phases if p["phase"] == "shape_p8"}
        per_round = [
            round(p8[r] / rate[(r, "b", ours[0])], 3) for r in rounds if r in p8 and (r, "b", ours[0]) in rate
        ]
        if per_round:
            out["p8_vectors_vs_p1_texts_b"] = {"median": statistics.median(per_round), "rounds": per_round}
    for p in phases:
        if p["phase"] == "rss":
            out["rss_mb"][p["target"]] = p["rss_mb"]
    return out
