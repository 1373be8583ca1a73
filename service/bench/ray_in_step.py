"""How soon every Ray replica is in step (issue 12: a change is in force on every replica within 2 s).

A change made through one replica (a ``PATCH /prefixes``) or in the shared folder (a file dropped in,
then removed) reaches the other replicas through their own watchers. This part of ``bench ray``
measures, through Ray's proxy, the seconds after which each replica first answers with the change.
The Ray tests (``tests/ray/test_ray_serve.py``) check that every replica gets there, not how fast.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.serving import REPLICA_HEADER
from service.waiting import wait_until

IN_STEP_TARGET_S = 2.0


def replica_seconds(
    client: httpx.Client, path: str, want: Callable[[Any], bool], replicas: int, timeout: float = 30.0
) -> dict[str, float]:
    """Poll ``GET path`` through the proxy until ``replicas`` replicas have answered with a body that
    ``want`` accepts; the seconds after which each replica (by id) first did."""
    start = time.monotonic()
    seen: dict[str, float] = {}

    def check() -> bool:
        r = client.get(path)
        r.raise_for_status()
        if want(r.json()):
            seen.setdefault(r.headers[REPLICA_HEADER], time.monotonic() - start)
        return len(seen) >= replicas

    wait_until(check, timeout, f"{replicas} replicas answering {path} with the change (so far {seen})")
    return seen


def listed(doc: Any) -> dict[str, bool]:
    """``GET /prefixes`` -> {name: enabled}."""
    return {p["name"]: p["enabled"] for p in doc["prefixes"]}


def drop_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` whole (written aside, then renamed into place)."""
    aside = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, aside)
    os.replace(aside, target)


def in_step_round(client: httpx.Client, folder: Path, replicas: int, tag: str) -> dict[str, float]:
    """One round: disable and re-enable a prefix with PATCH, drop a copy of a prefix file in and remove
    it; for each change, the seconds until the slowest replica answered with it."""
    names = listed(client.get("/prefixes").json())
    # an enabled prefix with a file of its own (not the built-in base, which cannot be disabled)
    name = sorted(n for n, on in names.items() if on and (folder / f"{n}.safetensors").is_file())[0]
    out: dict[str, float] = {}
    for label, on in (("patch_disable", False), ("patch_enable", True)):
        r = client.patch("/prefixes", json={name: {"enabled": on}})
        r.raise_for_status()

        def changed(doc: Any, on: bool = on) -> bool:
            return listed(doc).get(name) is on

        out[label] = max(replica_seconds(client, "/prefixes", changed, replicas).values())
    dropped = folder / f"in-step-{tag}.safetensors"
    drop_file(folder / f"{name}.safetensors", dropped)
    took = replica_seconds(client, "/prefixes", lambda d: dropped.stem in listed(d), replicas)
    out["file_added"] = max(took.values())
    dropped.unlink()
    took = replica_seconds(client, "/prefixes", lambda d: dropped.stem not in listed(d), replicas)
    out["file_removed"] = max(took.values())
    return out


def run_in_step(client: httpx.Client, folder: Path, replicas: int, rounds: int) -> dict[str, Any]:
    """``rounds`` rounds of :func:`in_step_round` through ``client`` (of the Ray app serving ``folder``,
    a copy the benchmark owns: it is changed); the seconds of each change and their summary."""
    samples = [in_step_round(client, folder, replicas, str(r)) for r in range(rounds)]
    every = [s for sample in samples for s in sample.values()]
    return {
        "rounds": samples,
        "summary": {
            "changes": len(every),
            "median_s": round(statistics.median(every), 3),
            "max_s": round(max(every), 3),
            "target_s": IN_STEP_TARGET_S,
            "within_target": max(every) <= IN_STEP_TARGET_S,
        },
    }
