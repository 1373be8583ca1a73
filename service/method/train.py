"""Train one prefix on one source task (or, as the multi-task baseline, on several) with PEFT.

A linear head per task reads the mean-pooled prefixed representation; only the prefix and the heads
learn. Dev metrics are checked every ``eval_every`` steps; the best prefix is kept and training stops
after ``patience`` checks without improvement. Seeds fix the initial prefix, the heads and the batches.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import peft
import torch
import transformers
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from tqdm import tqdm

from service.method.data import TaskData, majority_accuracy
from service.method.prefix_model import PrefixModel, build_prefix_model


@dataclass(frozen=True)
class TrainConfig:
    prefix_len: int = 16
    max_length: int = 128
    batch_size: int = 16
    lr: float = 1e-2
    head_lr: float = 2e-3
    weight_decay: float = 0.0
    max_steps: int = 300
    eval_every: int = 25
    patience: int = 4
    seed: int = 0
    init_std: float = 0.5
    head_init: str = "probe"  # "probe": fit the head as a logistic regression first (LP-FT); "random"
    projection: bool = False
    checkpoint_steps: tuple[int, ...] = ()
    threads: int | None = None


@dataclass(frozen=True)
class TaskSplit:
    """A task's training and dev examples."""

    train: TaskData
    dev: TaskData

    @property
    def name(self) -> str:
        return self.train.name


@dataclass
class TrainResult:
    key: torch.Tensor
    value: torch.Tensor
    metadata: dict[str, Any]
    model: PrefixModel  # holds the best prefix (used to check the engine against PEFT)
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _batches(n: int, size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless shuffled epochs of index batches."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, size):
            yield order[i : i + size]


def _labels(task: TaskData, names: list[str]) -> torch.Tensor:
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[label] for label in task.labels], dtype=torch.long)


@torch.no_grad()
def pooled_features(model: PrefixModel, data: TaskData, max_length: int, batch: int = 64) -> np.ndarray:
    """[N, hidden] mean-pooled vectors of ``data`` under the model's current prefix."""
    out = []
    for i in range(0, len(data), batch):
        pairs = data.pairs[i : i + batch] if data.pairs else None
        out.append(model.pooled(model.tokenize(data.texts[i : i + batch], pairs, max_length)).numpy())
    return np.concatenate(out)


def _fit_head(
    model: PrefixModel, linear: nn.Module, data: TaskData, names: list[str], cfg: TrainConfig
) -> None:
    """Start the head from a logistic regression on the initial prefixed vectors (linear probing, then
    tuning: the prefix's first gradients then follow a head that already reads the task)."""
    x = pooled_features(model, data, cfg.max_length)
    y = _labels(data, names).numpy()
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=cfg.seed).fit(x, y)
    coef, bias = lr.coef_, lr.intercept_
    if len(names) == 2:  # binary: sklearn fits one logit; the head has two
        coef, bias = np.concatenate([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    full_w = np.zeros((len(names), x.shape[1]), dtype=np.float32)
    full_b = np.zeros(len(names), dtype=np.float32)
    full_w[lr.classes_], full_b[lr.classes_] = coef, bias
    with torch.no_grad():
        cast(torch.Tensor, linear.weight).copy_(torch.from_numpy(full_w))
        cast(torch.Tensor, linear.bias).copy_(torch.from_numpy(full_b))


@torch.no_grad()
def predict(
    model: PrefixModel, head: nn.Module, data: TaskData, max_length: int, batch: int = 64
) -> np.ndarray:
    preds = []
    for i in range(0, len(data), batch):
        pairs = data.pairs[i : i + batch] if data.pairs else None
        enc = model.tokenize(data.texts[i : i + batch], pairs, max_length)
        preds.append(head(model.pooled(enc)).argmax(-1).numpy())
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def dev_metrics(
    model: PrefixModel, head: nn.Module, split: TaskSplit, names: list[str], max_length: int
) -> dict[str, float]:
    pred = predict(model, head, split.dev, max_length)
    gold = _labels(split.dev, names).numpy()
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(
            f1_score(gold, pred, average="macro", labels=list(range(len(names))), zero_division=0)
        ),
        "majority_accuracy": majority_accuracy(split.train, split.dev),
        "n_dev": len(split.dev),
    }


def train_prefix(
    model_path: Path, tasks: list[TaskSplit], cfg: TrainConfig, *, progress: bool = True
) -> TrainResult:
    """Train one prefix on ``tasks`` (one task: a source prefix; several: the multi-task baseline)."""
    start = time.perf_counter()  # the time reported covers loading, the head's probe fit and tuning
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_prefix_model(
        model_path, cfg.prefix_len, seed=cfg.seed, init_std=cfg.init_std, projection=cfg.projection
    )
    names = {t.name: sorted(set(t.train.labels) | set(t.dev.labels)) for t in tasks}
    heads = nn.ModuleDict(
        {
            t.name: nn.Sequential(nn.Dropout(0.1), nn.Linear(model.spec.hidden_size, len(names[t.name])))
            for t in tasks
        }
    )
    if cfg.head_init == "probe":
        for t in tasks:
            _fit_head(model, cast(nn.Sequential, heads[t.name])[1], t.train, names[t.name], cfg)
    opt = torch.optim.AdamW(
        [
            {"params": model.trainable(), "lr": cfg.lr},
            {"params": list(heads.parameters()), "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    rng = random.Random(cfg.seed)
    streams = {t.name: _batches(len(t.train), cfg.batch_size, rng) for t in tasks}
    labels = {t.name: _labels(t.train, names[t.name]) for t in tasks}
    best: dict[str, Any] = {"score": -1.0, "step": 0, "weights": None, "metrics": {}}
    history: list[dict[str, Any]] = []
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    bad_checks, step, seen = 0, 0, 0
    bar = tqdm(total=cfg.max_steps, desc=f"train {'+'.join(names)}", disable=not progress, mininterval=2)

    def check(step: int, loss: float | None) -> bool:
        """Dev metrics now; keep the best prefix; True when ``patience`` checks brought nothing better."""
        nonlocal best, bad_checks
        heads.eval()
        metrics = {t.name: dev_metrics(model, heads[t.name], t, names[t.name], cfg.max_length) for t in tasks}
        score = float(np.mean([m["macro_f1"] for m in metrics.values()]))
        history.append({"step": step, "loss": loss, "dev": metrics, "seconds": time.perf_counter() - start})
        if progress:
            bar.write(f"step {step}: dev macro-F1 {score:.4f} {json.dumps(metrics)}")
        if step > 0 and score > best["score"]:  # step 0 is the untrained prefix: a reference only
            weights = [p.detach().clone() for p in model.trainable()]
            best = {"score": score, "step": step, "metrics": metrics, "weights": weights}
            bad_checks = 0
            return False
        if step > 0:
            bad_checks += 1
        return bad_checks >= cfg.patience

    if cfg.head_init == "probe":
        # the linear probe on the initial prefix: what tuning the prefix adds is measured from here
        check(0, None)
    while step < cfg.max_steps:
        task = tasks[step % len(tasks)]  # multi-task: round robin, an equal share of steps per task
        idx = next(streams[task.name])
        pairs = [task.train.pairs[i] for i in idx] if task.train.pairs else None
        enc = model.tokenize([task.train.texts[i] for i in idx], pairs, cfg.max_length)
        heads.train()
        loss = nn.functional.cross_entropy(heads[task.name](model.pooled(enc)), labels[task.name][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        seen += len(idx)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{best['score']:.3f}", refresh=False)
        if step in cfg.checkpoint_steps:
            checkpoints[step] = model.key_value()
        if (step % cfg.eval_every == 0 or step == cfg.max_steps) and check(step, float(loss.item())):
            break
    bar.close()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        for p, w in zip(model.trainable(), best["weights"], strict=True):
            p.copy_(w)
    key, value = model.key_value()
    meta = _metadata(model, tasks, names, cfg, best, step, seen, seconds, history)
    return TrainResult(key, value, meta, model, checkpoints, history)


def _metadata(
    model: PrefixModel,
    tasks: list[TaskSplit],
    names: dict[str, list[str]],
    cfg: TrainConfig,
    best: dict[str, Any],
    steps: int,
    seen: int,
    seconds: float,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    single = len(tasks) == 1
    first = tasks[0]
    training = asdict(cfg) | {
        "method": "peft.PrefixTuning" + (" (prefix_projection)" if cfg.projection else ""),
        "head": "dropout 0.1 + linear on the mean-pooled final layer, per task",
        "steps_run": steps,
        "best_step": best["step"],
        "examples_seen": seen,
        "seconds": round(seconds, 1),
        "dev_history": [
            {
                "step": h["step"],
                "macro_f1": round(float(np.mean([m["macro_f1"] for m in h["dev"].values()])), 4),
            }
            for h in history
        ],
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    }
    training.pop("threads")
    data = {
        t.name: t.train.provenance
        | {
            "n_train": len(t.train),
            "n_dev": len(t.dev),
            "train_counts": t.train.counts(),
            "train_digest": t.train.digest(),
        }
        for t in tasks
    }
    return {
        "task": first.name if single else "multitask:" + "+".join(names),
        "description": first.train.description if single else "multi-task baseline: " + ", ".join(names),
        "labels": names[first.name] if single else names,
        "dev_metrics": best["metrics"][first.name] if single else best["metrics"],
        "backbone_fingerprint": model.spec.fingerprint,
        "position_convention": "peft",
        "pooling": "mean",
        "prefix_len": cfg.prefix_len,
        "init": {"method": "normal", "seed": cfg.seed, "std": cfg.init_std}
        if not cfg.projection
        else {"method": "projection"},
        "training": training,
        "data": data[first.name] if single else data,
    }
