"""The vector cache at load shape (b) (1 text per request, 32 concurrent; BENCHMARKS.md "Request
path"): texts/s with 0 %, 50 % and 90 % repeated texts, our server with the cache on against the same
server with it off (``PREFIX_EMBED_VECTOR_CACHE_BYTES=0``), side by side: ``bench service
--cache-repeats 0,50,90`` (``--only-cache`` for this alone).

Every (round, level) sends one fixed request stream to both servers, the order of the two alternating
round by round; its texts are new to the run (a fresh draw per round and level), so "0 %" has nothing
to hit, and a repeat always names a text sent at least ``concurrency`` requests before it (already
answered, so it can hit; a repeat of a text still in flight would not). The servers' own counters give
the hit rate each stream really had.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from service.bench.load import Call, run_load
from service.bench.texts import sample_texts

HITS = 'prefix_embed_vector_cache_total{event="hit"}'
MISSES = 'prefix_embed_vector_cache_total{event="miss"}'


@dataclass(frozen=True)
class CacheTarget:
    name: str  # cache_on | cache_off
    base_url: str
    model: str  # the prefix every request asks for (/v1/embeddings model)


def repeat_stream(n: int, repeated: float, *, gap: int, seed: int) -> list[str]:
    """``n`` texts, ``round(repeated * n)`` of them repeats of a text at least ``gap`` positions
    earlier, the rest new (distinct) texts."""
    rng = random.Random(seed)
    repeats = round(repeated * n)
    if repeats and n - repeats <= gap:
        raise ValueError(f"cannot place {repeats} repeats {gap} apart in {n} requests: {gap + 1} must be new")
    fresh = iter(sample_texts(n - repeats, seed=seed))
    stream: list[str] = []
    left = repeats
    for i in range(n):
        eligible = i - gap  # positions [0, eligible) may be repeated
        must = left >= n - i  # every remaining position has to be a repeat
        if left and eligible > 0 and (must or rng.random() < left / (n - i)):
            stream.append(stream[rng.randrange(eligible)])
            left -= 1
        else:
            stream.append(next(fresh))
    if left:
        raise ValueError(f"cannot place {repeats} repeats {gap} apart in {n} requests")
    return stream


def _counter(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def run_cache_rounds(
    targets: Sequence[CacheTarget],
    *,
    levels: Sequence[int],
    requests: int,
    concurrency: int,
    rounds: int,
    record: Callable[[str, dict[str, Any]], Any],
    time_limit_s: float = 300.0,
) -> None:
    """Every level x target, ``rounds`` times, the target order alternating by round."""
    for t in targets:  # warm-up, on texts no stream uses
        calls = [
            Call("/v1/embeddings", {"model": t.model, "input": [x]}, 1) for x in sample_texts(64, seed=7)
        ]
        asyncio.run(run_load(t.base_url, calls, concurrency, time_limit_s=time_limit_s))
    for rnd in range(rounds):
        order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
        for level in levels:
            texts = repeat_stream(requests, level / 100, gap=concurrency, seed=10_000 + 100 * rnd + level)
            for t in order:
                calls = [Call("/v1/embeddings", {"model": t.model, "input": [x]}, 1) for x in texts]
                hits, misses = _counter(t.base_url, HITS), _counter(t.base_url, MISSES)
                res = asyncio.run(run_load(t.base_url, calls, concurrency, time_limit_s=time_limit_s))
                hits, misses = _counter(t.base_url, HITS) - hits, _counter(t.base_url, MISSES) - misses
                looked = hits + misses
                record(
                    "cache",
                    {
                        "round": rnd,
                        "shape": "b",
                        "repeated_pct": level,
                        "target": t.name,
                        "hit_rate": round(hits / looked, 3) if looked else None,
                        **res.summary(),
                    },
                )


def cache_summary(phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per level: median texts/s with the cache on and off, and on/off per round (median, rounds)."""
    rows = [p for p in phases if p["phase"] == "cache"]
    rate = {(p["round"], p["repeated_pct"], p["target"]): p for p in rows}
    out: dict[str, Any] = {}
    for level in sorted({p["repeated_pct"] for p in rows}):
        rounds = sorted({p["round"] for p in rows if p["repeated_pct"] == level})
        per_round = [
            round(
                rate[(r, level, "cache_on")]["vectors_per_s"]
                / rate[(r, level, "cache_off")]["vectors_per_s"],
                3,
            )
            for r in rounds
            if (r, level, "cache_on") in rate and (r, level, "cache_off") in rate
        ]
        out[str(level)] = {
            "texts_per_s": {
                t: statistics.median(
                    [rate[(r, level, t)]["vectors_per_s"] for r in rounds if (r, level, t) in rate]
                )
                for t in ("cache_on", "cache_off")
            },
            "hit_rate_on": statistics.median(
                [
                    rate[(r, level, "cache_on")]["hit_rate"] or 0.0
                    for r in rounds
                    if (r, level, "cache_on") in rate
                ]
            ),
            "on_vs_off": {"median": statistics.median(per_round), "rounds": per_round} if per_round else None,
        }
    return out


def cache_markdown(result: dict[str, Any]) -> list[str]:
    summary = result.get("cache")
    if not summary:
        return []
    out = [
        "## Vector cache at shape (b) (1 text per request, c = 32)",
        "",
        "| repeated texts | cache off texts/s | cache on texts/s | hit rate (on) | on / off (median of rounds) |",
        "|---:|---:|---:|---:|---|",
    ]
    for level, row in summary.items():
        ratio = row["on_vs_off"]
        shown = f"{ratio['median']:.3f} ({', '.join(f'{r:.3f}' for r in ratio['rounds'])})" if ratio else "-"
        out.append(
            f"| {level} % | {row['texts_per_s']['cache_off']:.1f} | {row['texts_per_s']['cache_on']:.1f} | "
            f"{row['hit_rate_on']:.2f} | {shown} |"
        )
    return [*out, ""]
