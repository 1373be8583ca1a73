"""``python -m service bench soak``: a bounded hot-swap soak of a real server.

A server is started on 127.0.0.1 over a temporary prefix folder, with the folder watcher on. For
``duration_s`` seconds, ``concurrency`` clients send ``POST /embed`` (base64 vectors, so the float32
values are exact) while one swapper, every ``swap_every_s``, in turn:

- rewrites ``s0.safetensors`` **in place** with a new version (same size; written in chunks with a
  pause between them, as ``rsync --inplace`` or a slow copy does),
- replaces ``s1.safetensors`` **by rename** (temp file, then ``os.replace``),
- toggles ``s2`` with ``PATCH /prefixes/s2``.

``s3`` never changes. Every version written is remembered by its sha256 (the digest the server
reports). Every 200 response is checked: each prefix it names must carry the digest of a version
that was written whole (else it is a **torn** version), and each vector must equal the reference
encoder's vector for that text under that version (torch, in this process; ``atol``). Requests for
``s2`` may get 409 while it is disabled; any 5xx is an error. The result: requests, swaps,
vectors checked, mismatches, torn versions, responses by status, the server's RSS before/after.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from service.backend import build_torch_encoder
from service.bench.servers import our_server
from service.bench.texts import sample_texts
from service.config import Settings, default_model_path
from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.encoder import Encoder
from service.engine.prefix import LoadedPrefix
from service.procs import free_port
from service.registry.writer import native_bytes
from service.wire.encodings import decode_base64_float, l2_normalize

NAMES = ("s0", "s1", "s2", "s3")


@dataclass
class SoakConfig:
    duration_s: float = 60.0
    concurrency: int = 8
    swap_every_s: float = 1.0
    prefix_len: int = 8
    texts: int = 16
    inplace_chunks: int = 4  # an in-place rewrite is written in this many pieces
    inplace_pause_s: float = 0.05  # pause between the pieces
    atol: float = 1e-4  # server (any backend) vs the torch reference, unit vectors
    model: Path | None = None
    backend: str | None = None  # None: the server's default
    out_dir: Path | None = None
    seed: int = 0


@dataclass
class SoakResult:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # of POST /embed
    patch_statuses: Counter[int] = field(default_factory=Counter)
    vectors_checked: int = 0
    mismatches: int = 0
    torn: int = 0
    swaps_in_place: int = 0
    swaps_by_rename: int = 0
    toggles: int = 0
    versions_served: set[str] = field(default_factory=set)
    rss_mb_before: float = 0.0
    rss_mb_after: float = 0.0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        bad = [*self.statuses.items(), *self.patch_statuses.items()]
        return sum(n for s, n in bad if s >= 500 or s == 0)

    @property
    def ok(self) -> bool:
        return not (self.server_errors or self.mismatches or self.torn) and self.vectors_checked > 0

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "responses_by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "swaps_in_place": self.swaps_in_place,
            "swaps_by_rename": self.swaps_by_rename,
            "patch_toggles": self.toggles,
            "patch_responses_by_status": {str(k): v for k, v in sorted(self.patch_statuses.items())},
            "versions_served": len(self.versions_served),
            "vectors_checked": self.vectors_checked,
            "mismatches": self.mismatches,
            "torn_versions": self.torn,
            "server_errors": self.server_errors,
            "rss_mb_before": self.rss_mb_before,
            "rss_mb_after": self.rss_mb_after,
            "examples": self.examples[:5],
        }


class Versions:
    """Every prefix version written: its bytes' sha256 -> the tensors, and reference vectors."""

    def __init__(
        self, encoder: Encoder, spec: BackboneSpec, texts: list[str], prefix_len: int, seed: int
    ) -> None:
        self.encoder = encoder
        self.spec = spec
        self.texts = texts
        self.prefix_len = prefix_len
        self.rng = torch.Generator().manual_seed(seed)
        self.tensors: dict[str, tuple[str, torch.Tensor, torch.Tensor]] = {}
        self._vectors: dict[str, np.ndarray] = {}

    def new(self, name: str) -> bytes:
        shape = (self.spec.num_layers, self.spec.num_heads, self.prefix_len, self.spec.head_dim)
        key = torch.randn(shape, generator=self.rng) * 0.5
        value = torch.randn(shape, generator=self.rng) * 0.5
        data = native_bytes(key, value, {"backbone_fingerprint": self.spec.fingerprint})
        self.tensors[hashlib.sha256(data).hexdigest()] = (name, key, value)
        return data

    def find(self, digest: str) -> str | None:
        """The full sha256 of a version written whole that ``digest`` names (a prefix of it)."""
        if digest in self.tensors:
            return digest
        return next((d for d in self.tensors if d.startswith(digest)), None) if len(digest) >= 12 else None

    def reference(self, full: str) -> np.ndarray:
        """Unit vectors [texts, dim] of every text under this version."""
        if full not in self._vectors:
            name, key, value = self.tensors[full]
            prefix = LoadedPrefix(name, full, key, value, "peft", "<soak>", "native")
            vectors, _ = embed_sync(self.encoder, PrefixBank.build([prefix]), [name], self.texts)
            self._vectors[full] = l2_normalize(vectors)[:, 0]
        return self._vectors[full]


def _write_in_place(path: Path, data: bytes, chunks: int, pause_s: float) -> None:
    """Overwrite ``path`` without a rename, in ``chunks`` pieces (what a slow in-place copy does)."""
    step = -(-len(data) // max(1, chunks))
    with path.open("r+b") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            os.fsync(f.fileno())
            if i + step < len(data):
                time.sleep(pause_s)
        f.truncate()


def _write_by_rename(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.soak-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def _client(
    base: str,
    versions: Versions,
    result: SoakResult,
    answers: list[tuple[dict[str, Any], list[int]]],
    end: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while time.monotonic() < end:
            idx = rng.sample(range(len(versions.texts)), rng.randint(1, 3))
            names = ["s2"] if rng.random() < 0.2 else ["s0", "s1", "s3"]
            body = {"inputs": [versions.texts[i] for i in idx], "prefixes": names, "encoding": "base64"}
            try:
                resp = await client.post("/embed", json=body)
                status = resp.status_code
            except httpx.HTTPError:
                status = 0
            result.requests += 1
            result.statuses[status] += 1
            if status == 200:  # checked after the run: the reference encoder must not slow the clients
                answers.append((resp.json(), idx))


def _check(doc: dict[str, Any], idx: list[int], versions: Versions, result: SoakResult, atol: float) -> None:
    for p in doc["prefixes"]:
        full = versions.find(p["digest"])
        if full is None:
            result.torn += 1
            result.examples.append(
                f"torn: {p['name']} served with digest {p['digest'][:16]} never written whole"
            )
            continue
        result.versions_served.add(full)
        ref = versions.reference(full)
        for row, i in zip(doc["data"], idx, strict=True):
            got = decode_base64_float(row["embeddings"][p["name"]])
            result.vectors_checked += 1
            diff = float(np.abs(got - ref[i]).max())
            if diff > atol:
                result.mismatches += 1
                result.examples.append(f"mismatch: {p['name']} text {i}: max |diff| {diff:.2e}")


async def _swapper(
    base: str, folder: Path, cfg: SoakConfig, versions: Versions, result: SoakResult, end: float
) -> None:
    enabled = True
    turn = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while time.monotonic() < end - cfg.swap_every_s:
            await asyncio.sleep(cfg.swap_every_s)
            kind = turn % 3
            turn += 1
            if kind == 0:
                data = versions.new("s0")
                await asyncio.to_thread(
                    _write_in_place, folder / "s0.safetensors", data, cfg.inplace_chunks, cfg.inplace_pause_s
                )
                result.swaps_in_place += 1
            elif kind == 1:
                data = versions.new("s1")
                await asyncio.to_thread(_write_by_rename, folder / "s1.safetensors", data)
                result.swaps_by_rename += 1
            else:
                enabled = not enabled
                resp = await client.patch("/prefixes/s2", json={"enabled": enabled})
                result.patch_statuses[resp.status_code] += 1
                if resp.status_code != 200:
                    result.examples.append(f"PATCH /prefixes/s2 -> {resp.status_code}: {resp.text[:200]}")
                result.toggles += 1


def run_soak(cfg: SoakConfig) -> SoakResult:
    """Start a server, run the soak for ``cfg.duration_s``, stop the server; the counts."""
    model = cfg.model or default_model_path()
    overrides: dict[str, Any] = {"model": model, "device": "cpu", "dtype": "float32", "backend": "torch"}
    encoder = build_torch_encoder(Settings(**overrides))
    texts = sample_texts(cfg.texts)
    versions = Versions(encoder, encoder.spec, texts, cfg.prefix_len, cfg.seed)
    result = SoakResult()
    with tempfile.TemporaryDirectory(prefix="prefix-embed-soak-") as tmp:
        folder = Path(tmp) / "prefixes"
        folder.mkdir()
        for name in NAMES:
            (folder / f"{name}.safetensors").write_bytes(versions.new(name))
        port = free_port()
        env = {"PREFIX_EMBED_WATCH": "true", "PREFIX_EMBED_REQUEST_TIMEOUT_S": "120"}
        if cfg.backend:
            env["PREFIX_EMBED_BACKEND"] = cfg.backend
        log_path = (cfg.out_dir or Path(tmp)) / "soak-server.log"
        with our_server(port, model=model, prefix_dir=folder, env=env, log_path=log_path) as srv:
            base = f"http://127.0.0.1:{port}"
            result.rss_mb_before = srv.rss_mb()

            answers: list[tuple[dict[str, Any], list[int]]] = []

            async def main() -> None:
                end = time.monotonic() + cfg.duration_s
                await asyncio.gather(
                    _swapper(base, folder, cfg, versions, result, end),
                    *(
                        _client(base, versions, result, answers, end, cfg.seed + i)
                        for i in range(cfg.concurrency)
                    ),
                )

            start = time.monotonic()
            asyncio.run(main())
            result.seconds = time.monotonic() - start
            result.rss_mb_after = srv.rss_mb()
    for doc, idx in answers:  # checked after the run: the reference encoder must not slow the clients
        _check(doc, idx, versions, result, cfg.atol)
    return result
