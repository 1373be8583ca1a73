"""Ray Serve benchmark (BENCHMARKS.md, "Ray Serve"): start-up time to ready, throughput with 1 and 2
replicas, and the proxy's added latency at concurrency 1, each against ``serve`` alone, interleaved;
then, with 2 replicas, how soon a change is in force on every replica (:mod:`service.bench.ray_in_step`).

``python -m service bench ray --out bench-results/ray.json`` (needs the ``ray`` extra; this module
imports no Ray itself: the servers are processes). Both Ray phases give every configuration the same
CPU threads in total (1 replica x 2 CPUs, 2 replicas x 1 CPU; Ray sets each replica's
OMP_NUM_THREADS to its CPUs), so only the replica count changes. The Ray apps watch a copy of the
prefix folder (the in-step phase changes it); ``serve`` serves the folder itself, unwatched.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
from pathlib import Path
from typing import Any

from service.bench.load import Call, run_load
from service.bench.ray_in_step import run_in_step
from service.bench.servers import our_server, ray_serve_process
from service.bench.texts import sample_texts
from service.procs import ServerProcess, free_port


def ray_server(replicas: int, cpus: float, model: Path, prefix_dir: Path, log_path: Path) -> ServerProcess:
    """``ray-serve`` with ``replicas`` of ``cpus`` CPUs each, watching ``prefix_dir``; the vector cache
    off, as for ``serve`` (the rounds repeat their texts)."""
    args = ["--replicas", str(replicas), "--replica-cpus", str(cpus), "--model", str(model)]
    args += [
        "--prefix-dir",
        str(prefix_dir),
        "--watch",
        "--vector-cache-bytes",
        "0",
        "--log-level",
        "warning",
    ]
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return ray_serve_process(log_path, *args, env=env, grace_s=90)


def measure(url: str, texts: list[str], concurrency: int, batch: int) -> dict[str, Any]:
    calls = [
        Call("/embed", {"inputs": texts[i : i + batch], "encoding": "base64"}, batch)
        for i in range(0, len(texts) - batch + 1, batch)
    ]
    return asyncio.run(run_load(url, calls, concurrency)).summary()


def phase(serve_url: str, ray_url: str, rounds: int, texts: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Interleaved rounds (order alternating): latency at c=1 (1 text per request) and throughput
    at c=8 (8 texts per request), for ``serve`` alone and through Ray's proxy."""
    out: dict[str, list[dict[str, Any]]] = {"serve_c1": [], "ray_c1": [], "serve_c8": [], "ray_c8": []}
    for r in range(rounds):
        order = [("serve", serve_url), ("ray", ray_url)]
        for name, url in order if r % 2 == 0 else order[::-1]:
            out[f"{name}_c1"].append(measure(url, texts[:40], 1, 1))
            out[f"{name}_c8"].append(measure(url, texts, 8, 8))
    return out


def run_ray_bench(model: Path, prefix_dir: Path, logs: Path, *, rounds: int, n_texts: int) -> dict[str, Any]:
    """``serve`` alone, then beside Ray Serve with 1 and with 2 replicas (server logs under ``logs``):
    start-up seconds, the interleaved rounds of :func:`phase`, and their medians under ``summary``;
    ``in_step``: ``rounds`` rounds of changes with 2 replicas (:func:`run_in_step`)."""
    texts = sample_texts(n_texts, seed=1)
    result: dict[str, Any] = {"startup_s": {}, "rounds": rounds}
    watched = logs / "prefixes"  # the Ray apps' copy of the folder, changed by the in-step phase
    shutil.rmtree(watched, ignore_errors=True)
    shutil.copytree(prefix_dir, watched)
    port = free_port()
    env = {"PREFIX_EMBED_DEVICE": "cpu"}
    with our_server(port, model=model, prefix_dir=prefix_dir, env=env, log_path=logs / "serve.log") as srv:
        result["startup_s"]["serve"] = round(srv.startup_s, 1)
        for replicas, cpus in ((1, 2.0), (2, 1.0)):
            tag = f"ray{replicas}"
            with ray_server(replicas, cpus, model, watched, logs / f"{tag}.log") as ray:
                result["startup_s"][tag] = round(ray.startup_s, 1)
                result[tag] = phase(srv.url, ray.url, rounds, texts)
                if replicas > 1:
                    with ray.client() as client:
                        result["in_step"] = run_in_step(client, watched, replicas, rounds)
    summary: dict[str, Any] = {}
    for tag in ("ray1", "ray2"):
        s1 = statistics.median(x["p50_ms"] for x in result[tag]["serve_c1"])
        r1 = statistics.median(x["p50_ms"] for x in result[tag]["ray_c1"])
        s8 = statistics.median(x["vectors_per_s"] for x in result[tag]["serve_c8"])
        r8 = statistics.median(x["vectors_per_s"] for x in result[tag]["ray_c8"])
        summary[tag] = {
            "c1_p50_ms": {"serve": s1, tag: r1, "added_ms": round(r1 - s1, 1), "ratio": round(r1 / s1, 2)},
            "c8_vectors_per_s": {"serve": s8, tag: r8, "ratio": round(r8 / s8, 2)},
        }
    summary["in_step"] = result["in_step"]["summary"]
    result["summary"] = summary
    return result
