"""``POST /predict`` with every served head against ``POST /embed`` of the same prefixes (issue 21,
BENCHMARKS.md "Task heads"): one real server, the same texts, batch sizes and concurrency, variants
interleaved round by round, texts/s per variant and the ratio of medians. The heads run after pooling
(a matrix product each), so /predict should cost what /embed of its input prefixes costs."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.bench.load import Call, fetch_json, run_load
from service.bench.servers import our_server
from service.bench.texts import sample_texts
from service.procs import free_port


@dataclass(frozen=True)
class PredictBenchConfig:
    prefix_dir: Path
    model: Path
    out_dir: Path
    shapes: Sequence[tuple[int, int]] = ((32, 4), (1, 16))  # (texts per request, concurrency)
    rounds: int = 20  # waves of each variant
    env: dict[str, str] = field(default_factory=dict)  # PREFIX_EMBED_* of the server


def _variants(heads: list[str], prefixes: list[str], batches: list[list[str]]) -> dict[str, list[Call]]:
    return {
        "predict": [Call("/predict", {"inputs": b, "tasks": heads}, len(b)) for b in batches],
        "embed float": [Call("/embed", {"inputs": b, "prefixes": prefixes}, len(b)) for b in batches],
        "embed base64": [
            Call("/embed", {"inputs": b, "prefixes": prefixes, "encoding": "base64"}, len(b)) for b in batches
        ],
    }


def heads_cost(prefix_dir: Path, model: Path, texts: int = 32, reps: int = 200) -> dict[str, Any]:
    """The heads alone, in-process: the plan, every head's matrix product and the response document
    for ``texts`` texts on fixed vectors (median of ``reps``), against no load noise of the server."""
    import numpy as np

    from service.engine.backbone import read_spec
    from service.heads.predict import plan_predict, render_predict_document
    from service.registry.registry import PrefixRegistry
    from service.wire.document import dumps_document

    spec = read_spec(model)
    plan = plan_predict(PrefixRegistry(prefix_dir, spec).scan().heads, None)
    shape = (texts, len(plan.names), spec.hidden_size)
    vectors = np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dumps_document(render_predict_document(model="m", plan=plan, vectors=vectors, prompt_tokens=0))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"texts": texts, "heads": len(plan.heads), "ms_per_request": round(median * 1e3, 3),
            "us_per_text": round(median * 1e6 / texts, 1)}  # fmt: skip


def _wave_rates(
    url: str, variants: dict[str, list[Call]], concurrency: int, r: int
) -> dict[str, tuple[int, float]]:
    """One wave of each variant (the same texts), in an order rotated by round ``r``: (texts, seconds)."""
    names = list(variants)
    out = {}
    for name in names[r % len(names) :] + names[: r % len(names)]:
        run = asyncio.run(run_load(url, variants[name], concurrency))
        assert run.ok == len(variants[name]), run.summary()
        out[name] = (run.vectors, run.seconds)
    return out


def run_predict_bench(cfg: PredictBenchConfig) -> dict[str, Any]:
    """Per shape, ``rounds`` waves of ``concurrency`` requests; each round sends one wave of every
    variant (fresh texts per round, the same texts for the three variants), so load that comes and
    goes on a shared machine falls on all of them alike. Reported: texts/s over all waves per
    variant, and the median of the per-round ratios."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    log = cfg.out_dir / "predict-server.log"
    with our_server(port, model=cfg.model, prefix_dir=cfg.prefix_dir, env=cfg.env, log_path=log):
        listed = httpx.get(f"{url}/heads", timeout=30).json()["heads"]
        heads = [h["name"] for h in listed if h["available"] and h["enabled"]]
        prefixes = list(dict.fromkeys(i["name"] for h in listed if h["name"] in heads for i in h["inputs"]))
        info = httpx.get(f"{url}/info", timeout=30).json()
        result: dict[str, Any] = {
            "heads": heads,
            "prefixes": prefixes,
            "backend": info["backend"],
            "device": info["device"],
            "rounds": cfg.rounds,
            "cpus": os.cpu_count(),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
            "shapes": [],
        }
        for per_request, concurrency in cfg.shapes:
            wave = per_request * concurrency
            texts = sample_texts(wave * (cfg.rounds + 1), seed=21 + per_request)
            waves = [
                _variants(
                    heads, prefixes, [texts[i : i + per_request] for i in range(w, w + wave, per_request)]
                )
                for w in range(0, len(texts), wave)
            ]
            sample = asyncio.run(fetch_json(url, waves[0]["predict"][0]))  # a real answer, not an error
            assert set(sample["data"][0]["predictions"]) == set(heads), sample
            _wave_rates(url, waves[0], concurrency, 0)  # warm-up wave
            runs = [_wave_rates(url, waves[r + 1], concurrency, r) for r in range(cfg.rounds)]
            total = {n: sum(r[n][0] for r in runs) / sum(r[n][1] for r in runs) for n in runs[0]}
            ratio = {
                other: statistics.median((r["predict"][0] / r["predict"][1]) / (r[other][0] / r[other][1]) for r in runs)
                for other in ("embed float", "embed base64")
            }  # fmt: skip
            result["shapes"].append(
                {
                    "texts_per_request": per_request,
                    "concurrency": concurrency,
                    "texts_per_wave": wave,
                    "texts_per_s": {n: round(v, 2) for n, v in total.items()},
                    "per_round_texts_per_s": {n: [round(r[n][0] / r[n][1], 2) for r in runs] for n in total},
                    "predict_vs_embed_float": round(total["predict"] / total["embed float"], 3),
                    "predict_vs_embed_base64": round(total["predict"] / total["embed base64"], 3),
                    "median_round_ratio": {n: round(v, 3) for n, v in ratio.items()},
                }
            )
        result["heads_alone"] = heads_cost(cfg.prefix_dir, cfg.model)
        result["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{len(result['heads'])} heads over {len(result['prefixes'])} prefixes, {result['backend']} on "
        f"{result['device']}, {result['rounds']} rounds (one wave of each variant per round, interleaved); "
        f"load average {' '.join(result['loadavg_before'])} before, {' '.join(result['loadavg_after'])} after.",
        "",
        "| texts/request | concurrency | /predict texts/s | /embed float texts/s | /embed base64 texts/s "
        "| predict / embed float (all waves; median round) | predict / embed base64 (all waves; median round) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["shapes"]:
        t, m = s["texts_per_s"], s["median_round_ratio"]
        lines.append(
            f"| {s['texts_per_request']} | {s['concurrency']} | {t['predict']} | {t['embed float']} | "
            f"{t['embed base64']} | {s['predict_vs_embed_float']:.3f}; {m['embed float']:.3f} | "
            f"{s['predict_vs_embed_base64']:.3f}; {m['embed base64']:.3f} |"
        )
    alone = result["heads_alone"]
    lines += [
        "",
        f"The {alone['heads']} heads alone (in-process, fixed vectors: plan, matrix products, response "
        f"document): {alone['ms_per_request']} ms per request of {alone['texts']} texts, "
        f"{alone['us_per_text']} us per text.",
    ]
    return "\n".join(lines) + "\n"
