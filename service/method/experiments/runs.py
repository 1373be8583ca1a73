"""``run``: train rows of the experiments for one source task, measure each prefix's source value;
``bench``: the cost of one training step against the depth S."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict
from typing import Any

import torch

from service.config import default_model_path
from service.engine.backbone import load_backbone
from service.method.experiments.rows import (
    LEGACY_DEPTHS,
    OUT,
    PREFIX_OUT,
    cfg_for,
    log,
    shared_cache,
    source_splits,
)
from service.method.prefix_io import write_native
from service.method.source_value import source_value
from service.method.train import TaskSplit, train_prefix
from service.method.trunk import build_trunk_cache, top_pooled


def run(task: str, rows: list[str], seeds: list[int], threads: int) -> None:
    """Each row and seed: train over the task's shared trunk cache, measure the source value, write
    the prefix file and the run's record (rows already recorded are skipped)."""
    torch.set_num_threads(threads)
    backbone = load_backbone(default_model_path(), device="cpu", dtype="float32")
    shared: dict[tuple[int | None, int], Any] = {}
    for seed in seeds:
        for row in rows:
            cfg = cfg_for(row, seed, task)
            done = OUT / "runs" / row / f"{task}.seed{seed}.json"
            if done.is_file():
                log(f"{task} {row} seed {seed}: done already")
                continue
            key = (cfg.max_examples, seed)
            if key not in shared:  # one pool at a time; the 2,000 pool keeps the depth table's depths
                same_pool = {cfg_for(r, seed, task).first_layer for r in rows if cfg_for(r, seed, task).max_examples == cfg.max_examples}  # fmt: skip
                depths = (
                    LEGACY_DEPTHS
                    if cfg.max_examples == 2000
                    else tuple(sorted(int(s or 0) for s in same_pool))
                )
                shared = {key: shared_cache(backbone, task, cfg, depths)}
            (train, dev, test), caches = shared[key]
            log(f"{task} {row} seed {seed}: training ({cfg})")
            res = train_prefix(backbone, [TaskSplit(train, dev)], cfg, progress=False, caches=caches)
            value = source_value(res, train, test)
            file = PREFIX_OUT / row / f"{task}.seed{seed}.safetensors"
            meta = res.metadata | {"source_value": value, "experiment_row": row}
            write_native(file, res.key, res.value, meta, backbone.spec)
            log(f"{task} {row} seed {seed}: dev {res.metadata['dev_metrics']['accuracy']:.3f} test prefix "
                f"{value['prefix']['accuracy']:.3f} base {value['base']['accuracy']:.3f} "
                f"({value['gain']:+.3f} +- {value['gain_se']:.3f})")  # fmt: skip
            training = res.metadata["training"]
            record = {
                "task": task, "row": row, "seed": seed, "config": asdict(cfg), "pool": cfg.max_examples,
                "dev": res.metadata["dev_metrics"], "steps": training["steps_run"],
                "best_step": training["best_step"], "seconds": training["seconds"],
                "seconds_per_step": training["seconds_per_step"], "source_value": value, "file": str(file),
                "n_train": len(train), "n_dev": len(dev),
            }  # fmt: skip
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(record, indent=2) + "\n")


def bench(reps: int, threads: int) -> None:
    """Seconds per training step (forward + backward + AdamW) at S = 0, 3, 4, 5 over the cached trunk,
    and at S = 4 with the trunk run (no grad) inside the step: the same batch, interleaved."""
    torch.set_num_threads(threads)
    backbone = load_backbone(default_model_path(), device="cpu", dtype="float32")
    train, _, _ = source_splits("question-type", cfg_for("depth4", 0, "question-type"))
    idx = list(range(16))
    texts = [train.texts[i] for i in idx]
    cache = build_trunk_cache(backbone, texts, None, [0, 3, 4, 5], 48)
    spec = backbone.spec
    params = {}
    for s in (0, 3, 4, 5):
        shape = (spec.num_layers - s, spec.num_heads, 16, spec.head_dim)
        params[s] = (
            torch.nn.Parameter(torch.randn(shape) * 0.5),
            torch.nn.Parameter(torch.randn(shape) * 0.5),
        )
    opts = {s: torch.optim.AdamW(list(params[s]), lr=1e-2) for s in params}
    head = torch.nn.Linear(spec.hidden_size, 6)
    y = torch.randint(0, 6, (16,))

    def step(s: int, uncached: bool) -> None:
        if uncached:
            with torch.no_grad():
                c = build_trunk_cache(backbone, texts, None, [s], 48)
            hidden, mask = c.batch(s, idx)
        else:
            hidden, mask = cache.batch(s, idx)
        k, v = params[s]
        loss = torch.nn.functional.cross_entropy(head(top_pooled(backbone, hidden, mask, s, k, v)), y)
        opts[s].zero_grad()
        loss.backward()
        opts[s].step()

    times: dict[str, list[float]] = {}
    variants = [(f"S={s} cached", s, False) for s in (0, 3, 4, 5)] + [("S=4 trunk in the step", 4, True)]
    for r in range(reps + 2):
        for name, s, unc in variants:
            t0 = time.perf_counter()
            step(s, unc)
            if r >= 2:  # 2 warm-up rounds
                times.setdefault(name, []).append(time.perf_counter() - t0)
    ref = statistics.median(times["S=0 cached"])
    table = {
        n: {"median_s": statistics.median(t), "ratio_to_S0": statistics.median(t) / ref}
        for n, t in times.items()
    }
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"reps": reps, "threads": threads, "batch": 16, "max_tokens": 48, "steps": table}
    (OUT / "bench_train_step.json").write_text(json.dumps(record, indent=2) + "\n")
    for n, t in table.items():
        log(f"{n}: median {t['median_s'] * 1000:.1f} ms/step, {t['ratio_to_S0']:.2f}x S=0")
