"""The shipped prefixes' task heads (issue 21): ``prefixes/heads/TASK.safetensors``.

Each head is fitted as RESULTS.md's "source value" probe is: the one probe (``search_probe``: C in
{0.001, 0.01, 0.1} by stratified 3-fold CV on the training split), trained on the prefix's training
split and scored on its held-out test split, the same data and splits as RESULTS.md (``SplitRecipe``;
the train split is checked against the digest the prefix file records). The vectors are the served
ones (the engine, torch backend, the server's token limit), unnormalized, so a head's recorded test
accuracy is what ``POST /predict`` reproduces on the same texts (tests/e2e/test_shipped_heads.py). The
same probe on ``base`` (same examples) is fitted and reported beside it, not shipped.

``python -m service.method.experiments heads [--tasks question-type,sentiment]``; vectors are cached
under ``.cache/heads`` (a long encoding resumes from its checkpoint there); results go to ``results/heads/shipped.{json,md}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.backbones.catalog import DEFAULT_BACKBONE
from service.backend import build_torch_encoder
from service.config import Settings
from service.engine.calibration import vectors_identity
from service.engine.direct import embed_sync
from service.engine.encoder import Encoder
from service.engine.pooling import pooling_label
from service.engine.prefix import BASE_NAME
from service.heads.head import HeadInput
from service.heads.writer import build_head, write_head
from service.method.head_fit import SplitRecipe, head_accuracy, probe_head
from service.method.probes import search_probe
from service.registry.registry import PrefixRegistry

CS = (0.001, 0.01, 0.1)  # RESULTS.md's source-value grid
OUT = Path("results") / "heads"
BATCH = 32  # texts per forward pass (length-sorted)
CHECKPOINT_BATCHES = 4  # batches between checkpoints of a long encoding


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def vectors(encoder: Encoder, bank: Any, names: list[str], texts: list[str], cache: Path) -> np.ndarray:
    """[N, len(names), dim] served vectors (unnormalized), by length-sorted batches; cached.

    Long encodings (BBC at 384 tokens on mpnet: an hour on one core) keep a checkpoint beside the
    cache every ``CHECKPOINT_BATCHES`` batches, so a stopped run resumes where it was instead of
    starting over; the checkpoint is tied to the texts by their digest and removed once complete."""
    if cache.is_file():
        return np.load(cache)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), len(names), encoder.dim), dtype=np.float32)
    partial = cache.with_name(cache.stem + ".partial.npz")
    texts_digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    done = _resume(partial, texts_digest, out)
    if done:
        log(f"{cache.name}: resumed at {done}/{len(texts)} texts")
    cache.parent.mkdir(parents=True, exist_ok=True)
    for batch, start in enumerate(range(done, len(order), BATCH)):
        idx = order[start : start + BATCH]
        out[idx] = embed_sync(encoder, bank, names, [texts[i] for i in idx])[0]
        end = min(start + BATCH, len(order))
        if (batch + 1) % CHECKPOINT_BATCHES == 0 and end < len(order):
            _checkpoint(partial, texts_digest, out, end)
            log(f"{cache.name}: {end}/{len(texts)} texts")
    tmp = cache.with_name(cache.name + ".tmp")
    with tmp.open("wb") as fh:  # whole or not at all: a stop mid-save leaves no truncated cache
        np.save(fh, out)
    os.replace(tmp, cache)
    partial.unlink(missing_ok=True)
    return out


def _resume(partial: Path, texts_digest: str, out: np.ndarray) -> int:
    """Fill ``out`` from a checkpoint of the same texts; the number of sorted texts done (0: none)."""
    if not partial.is_file():
        return 0
    with np.load(partial) as saved:
        if str(saved["texts_digest"]) != texts_digest or saved["vectors"].shape != out.shape:
            return 0
        out[:] = saved["vectors"]
        return int(saved["done"])


def _checkpoint(partial: Path, texts_digest: str, out: np.ndarray, done: int) -> None:
    """Write the checkpoint whole or not at all (temporary file, then rename)."""
    tmp = partial.with_name(partial.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, vectors=out, done=np.int64(done), texts_digest=np.str_(texts_digest))
    os.replace(tmp, partial)


def fit_task(
    task: str, prefix_dir: Path, encoder: Encoder, settings: Settings, cache_dir: Path
) -> dict[str, Any]:
    snap = PrefixRegistry.from_settings(settings, encoder.spec).scan()
    prefix = snap.bank.get(task)
    meta = prefix.metadata
    recipe = SplitRecipe.of_prefix(meta)
    train, _, test = recipe.splits(task)
    if train.digest() != meta["data"]["train_digest"]:
        raise SystemExit(
            f"{task}: the train split's digest {train.digest()} is not the prefix's {meta['data']['train_digest']}"
        )
    names = [BASE_NAME, task]
    # by the prefix's tensors, not its digest: a re-calibrated file has the same vectors
    tag = f"{task}-{vectors_identity(prefix)[:12]}-{encoder.spec.fingerprint}-{encoder.max_input_tokens}"
    t0 = time.perf_counter()
    x_train = vectors(encoder, snap.bank, names, train.texts, cache_dir / f"{tag}-train.npy")
    x_test = vectors(encoder, snap.bank, names, test.texts, cache_dir / f"{tag}-test.npy")
    log(f"{task}: vectors of {len(train)} + {len(test)} texts in {time.perf_counter() - t0:.0f} s")
    pooling = pooling_label(settings.pooling, settings.pooling_layers)
    data = recipe.metadata() | {"train_digest": train.digest(), "test_digest": test.digest()}
    result: dict[str, Any] = {"task": task, "n_train": len(train), "n_test": len(test)}
    for column, name in enumerate(names):
        fitted = search_probe(x_train[:, column], train.labels, cs=CS, seed=0)
        c, cv = fitted.c, fitted.cv_accuracy
        fit = {
            "method": "standardized logistic regression (service/method/probes.py search_probe)",
            "cs": list(CS), "c": c, "cv": "stratified 3-fold on the training split", "cv_accuracy": cv,
            "seed": 0, "n_train": len(train), "backend": encoder.backend, "max_input_tokens": encoder.max_input_tokens,
            "command": "python -m service.method.experiments heads",
        }  # fmt: skip
        meta_out = {"description": meta.get("description", task), "pooling": pooling, "fit": fit, "data": data,
                    "provenance": meta.get("data", {})}  # fmt: skip
        inputs = [HeadInput(name, snap.bank.get(name).digest)]
        params = probe_head(fitted, inputs, task=task, normalize=False, metadata=meta_out)
        head, _ = build_head(task, params, encoder.spec)  # as the server loads it
        acc = head_accuracy(head, x_test[:, [column]], test.labels)
        sk = float(np.mean(fitted.predict(x_test[:, column]) == np.asarray(test.labels)))
        result["base" if name == BASE_NAME else "prefix"] = {
            "c": c, "cv_accuracy": cv, "test": acc.metadata(), "sklearn_test_accuracy": sk
        }  # fmt: skip
        if name == task:  # the base head is only measured, never shipped
            write_head(
                prefix_dir,
                task,
                replace(params, metadata=meta_out | {"metrics": {"test": acc.metadata()}}),
                encoder.spec,
            )
    result["source_value"] = meta.get("source_value")
    log(f"{task}: head test {result['prefix']['test']['accuracy']:.3f} (base head {result['base']['test']['accuracy']:.3f}; "
        f"RESULTS source value {meta['source_value']['prefix']['accuracy']:.3f} vs {meta['source_value']['base']['accuracy']:.3f})")  # fmt: skip
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| head | train/test | C (CV acc) | test acc | base head test acc | gain (pt) | RESULTS source value (prefix / base) |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        p, b, sv = r["prefix"], r["base"], r["source_value"]
        gain = 100 * (p["test"]["accuracy"] - b["test"]["accuracy"])
        lines.append(
            f"| {r['task']} | {r['n_train']}/{r['n_test']} | {p['c']:g} ({p['cv_accuracy']:.3f}) | {p['test']['accuracy']:.3f} | "
            f"{b['test']['accuracy']:.3f} | {gain:+.1f} | {sv['prefix']['accuracy']:.3f} / {sv['base']['accuracy']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def fit_heads(
    prefix_dir: Path, tasks: list[str], cache: Path, threads: int = 1, model: str = DEFAULT_BACKBONE
) -> list[dict[str, Any]]:
    """Fit and write the heads of ``tasks`` (default: every prefix whose metadata names its built-in
    data set) on the known backbone ``model``; update the results table (the default backbone's under
    results/heads, another's under results/heads/NAME; rows of other tasks recorded earlier are kept)."""
    torch.set_num_threads(threads)
    chosen: dict[str, Any] = {
        "model": Path(model),
        "prefix_dir": prefix_dir,
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
    }
    settings = Settings(**chosen)
    encoder = build_torch_encoder(settings)
    snap = PrefixRegistry.from_settings(settings, encoder.spec).scan()
    tasks = tasks or [
        p.name for p in snap.bank.prefixes if not p.builtin and "loader" in p.metadata.get("data", {})
    ]
    results = [fit_task(t, prefix_dir, encoder, settings, cache) for t in tasks]
    out = OUT if model == DEFAULT_BACKBONE else OUT / model
    out.mkdir(parents=True, exist_ok=True)
    # a run over some tasks keeps the recorded rows of the others (heads are fitted a few at a time)
    earlier = json.loads((out / "shipped.json").read_text()) if (out / "shipped.json").is_file() else []
    by_task = {r["task"]: r for r in earlier} | {r["task"]: r for r in results}
    table = [by_task[t] for t in sorted(by_task)]
    (out / "shipped.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "shipped.md").write_text(markdown(table))
    log(f"wrote {out / 'shipped.json'} and shipped.md")
    return results
