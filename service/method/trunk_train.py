"""Train a native prefix in layers S..L-1 over a cached trunk (``train --first-layer S``).

The prefix is the key/value tensors themselves ([L-S, heads, Lp, head_dim], native layout, text
positions unshifted: ``position_convention: none``), or, with ``projection``, the output of a small
MLP over a [Lp, hidden] table (prefix-tuning's reparameterization; the file stores the MLP's output).
The trunk (layers 0..S-1) runs once per text without gradients (:mod:`service.method.trunk`); each
step runs only the top L-S layers. Recipe options:

- ``init``: ``normal`` (a seeded N(0, std^2) draw, as the PEFT trainer) or ``tokens`` (the keys and
  values real tokens have in each layer: prefix-tuning's advice; the tokens come from a fixed set of
  neutral sentences, so every task of one backbone, depth, length and seed starts from the same point);
- ``preserve``: weight of a term ``1 - cos(prefixed vector, base vector)`` that keeps the served
  vector near the plain backbone's (its gradient reaches only the prefix: base is a constant);
- ``schedule``: ``constant`` or ``cosine`` (10 % linear warm-up, then cosine decay to 0).

A linear head on the pooled vector starts as a logistic regression on the initial prefix's vectors
(LP-FT); dev macro-F1 every ``eval_every`` steps, the best prefix kept, early stopping on ``patience``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import transformers
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from service.engine.backbone import Backbone
from service.method.data import TaskData, majority_accuracy
from service.method.trunk import TrunkCache, build_trunk_cache, pooled_all, top_pooled
from service.registry.init_record import normal_kv

# Neutral sentences whose tokens' keys/values start a ``tokens``-initialized prefix (fixed, so the
# start point depends only on backbone, depth, length and seed).
INIT_SENTENCES = (
    "The report was published on Monday and describes the results in some detail.",
    "She asked whether the meeting could be moved to the afternoon.",
    "Prices rose slightly last year, while the number of visitors stayed the same.",
    "This is a short note about the weather, the road and the evening train.",
    "He thought the film was long but the music was good.",
    "What time does the library open on Saturday?",
    "Please send me the documents before the end of the week.",
    "The team won the match after a difficult first half.",
)
INITS = ("normal", "tokens")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrunkTrainConfig:
    first_layer: int = 4
    prefix_len: int = 16
    max_length: int = 128
    batch_size: int = 16
    lr: float = 1e-2
    head_lr: float = 5e-3
    max_steps: int = 300
    eval_every: int = 25
    patience: int = 4
    seed: int = 0
    init: str = "normal"
    init_std: float = 0.5
    projection: bool = False
    projection_hidden: int = 256
    preserve: float = 0.0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init {self.init!r} not in {INITS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} not in {SCHEDULES}")
        if self.preserve < 0:
            raise ValueError("preserve must be >= 0")


@torch.no_grad()
def token_kv(
    backbone: Backbone, first_layer: int, prefix_len: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys/values [L-S, heads, Lp, head_dim] of ``prefix_len`` real tokens of :data:`INIT_SENTENCES`
    (drawn with ``seed``; the same tokens in every layer), computed by each layer's own projections."""
    spec = backbone.spec
    cache = build_trunk_cache(backbone, INIT_SENTENCES, None, range(spec.num_layers), max_length=64)
    positions = [(t, j) for t, s in enumerate(cache.states[0]) for j in range(s.shape[0])]
    picked = random.Random(seed).sample(positions, prefix_len)
    keys, values = [], []
    for i in range(first_layer, spec.num_layers):
        h = torch.stack([cache.states[i][t][j] for t, j in picked])  # [Lp, hidden], the input of layer i
        attn: Any = backbone.model.encoder.layer[i].attention.self  # type: ignore[index,union-attr]
        shape = (prefix_len, spec.num_heads, spec.head_dim)
        keys.append(attn.key(h).view(shape).transpose(0, 1))
        values.append(attn.value(h).view(shape).transpose(0, 1))
    return torch.stack(keys).float(), torch.stack(values).float()


class TrunkPrefix(nn.Module):
    """The trainable prefix: K/V tensors, or an MLP-reparameterized table (``projection``)."""

    def __init__(self, backbone: Backbone, cfg: TrunkTrainConfig):
        super().__init__()
        spec = backbone.spec
        self.layers = spec.num_layers - cfg.first_layer
        self.shape = (self.layers, spec.num_heads, cfg.prefix_len, spec.head_dim)
        g = torch.Generator().manual_seed(cfg.seed)
        self.projection: nn.Module | None = None
        if cfg.projection:
            h = spec.hidden_size
            self.table = nn.Parameter(torch.randn(cfg.prefix_len, h, generator=g) * cfg.init_std)
            torch.manual_seed(cfg.seed)
            self.projection = nn.Sequential(
                nn.Linear(h, cfg.projection_hidden),
                nn.Tanh(),
                nn.Linear(cfg.projection_hidden, self.layers * 2 * h),
            )
            return
        if cfg.init == "tokens":
            key, value = token_kv(backbone, cfg.first_layer, cfg.prefix_len, cfg.seed)
        else:
            key, value = normal_kv(self.shape, cfg.seed, cfg.init_std)
        self.key = nn.Parameter(key.clone())
        self.value = nn.Parameter(value.clone())

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.projection is None:
            return self.key, self.value
        lp = self.shape[2]
        out = self.projection(self.table).view(lp, self.layers, 2, self.shape[1], self.shape[3])
        kv = out.permute(1, 2, 3, 0, 4)  # [layers, 2, heads, Lp, head_dim]
        return kv[:, 0], kv[:, 1]


@dataclass
class TrunkTrainResult:
    key: torch.Tensor
    value: torch.Tensor
    metadata: dict[str, Any]
    history: list[dict[str, Any]]
    seconds_per_step: float


def _label_ids(data: TaskData, names: list[str]) -> torch.Tensor:
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[label] for label in data.labels], dtype=torch.long)


def _lr_factor(schedule: str, max_steps: int) -> Any:
    warm = max(1, max_steps // 10)

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, max_steps - warm))))

    return factor


def preservation_loss(pooled: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(pooled, base)``: how far the prefixed vectors moved from the plain ones."""
    return (1 - nn.functional.cosine_similarity(pooled, base.detach(), dim=-1)).mean()


def train_trunk_prefix(
    backbone: Backbone,
    train: TaskData,
    dev: TaskData,
    cfg: TrunkTrainConfig,
    *,
    train_cache: TrunkCache | None = None,
    dev_cache: TrunkCache | None = None,
    log: Any = None,
) -> TrunkTrainResult:
    """Train one prefix at depth ``cfg.first_layer``; the caches may be shared between runs."""
    start = time.perf_counter()
    s = cfg.first_layer
    if not 0 <= s < backbone.spec.num_layers:
        raise ValueError(f"first_layer {s} outside 0..{backbone.spec.num_layers - 1}")
    if train_cache is None:
        train_cache = build_trunk_cache(backbone, train.texts, train.pairs, [s], cfg.max_length)
    if dev_cache is None:
        dev_cache = build_trunk_cache(backbone, dev.texts, dev.pairs, [s], cfg.max_length)
    torch.manual_seed(cfg.seed)
    prefix = TrunkPrefix(backbone, cfg)
    names = sorted(set(train.labels) | set(dev.labels))
    y_train, y_dev = _label_ids(train, names), _label_ids(dev, names).numpy()
    head = nn.Linear(backbone.spec.hidden_size, len(names))
    drop = nn.Dropout(0.1)

    def vectors(cache: TrunkCache) -> torch.Tensor:
        key, value = prefix.kv()
        return pooled_all(backbone, cache, s, key, value)

    # LP-FT: the head starts as a logistic regression on the initial prefix's vectors.
    x0 = vectors(train_cache).numpy()
    lr0 = LogisticRegression(C=1.0, max_iter=1000, random_state=cfg.seed).fit(x0, y_train.numpy())
    coef, bias = lr0.coef_, lr0.intercept_
    if len(lr0.classes_) == 2 and coef.shape[0] == 1:
        coef, bias = np.concatenate([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    w = np.zeros((len(names), x0.shape[1]), dtype=np.float32)
    b = np.zeros(len(names), dtype=np.float32)
    w[lr0.classes_], b[lr0.classes_] = coef, bias
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w))
        head.bias.copy_(torch.from_numpy(b))

    opt = torch.optim.AdamW(
        [
            {"params": list(prefix.parameters()), "lr": cfg.lr},
            {"params": list(head.parameters()), "lr": cfg.head_lr},
        ],
        weight_decay=0.0,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.schedule, cfg.max_steps))
    rng = random.Random(cfg.seed)
    order: list[int] = []
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -1.0, "step": 0, "kv": None, "metrics": {}}
    bad, step, step_seconds = 0, 0, 0.0

    def check(step: int, loss: float | None) -> bool:
        nonlocal best, bad
        with torch.no_grad():
            pred = head(vectors(dev_cache)).argmax(-1).numpy()
        metrics = {
            "accuracy": float(accuracy_score(y_dev, pred)),
            "macro_f1": float(
                f1_score(y_dev, pred, average="macro", labels=list(range(len(names))), zero_division=0)
            ),
            "majority_accuracy": majority_accuracy(train, dev),
            "n_dev": len(dev),
        }
        history.append({"step": step, "loss": loss, "macro_f1": round(metrics["macro_f1"], 4)})
        if log is not None:
            log(f"step {step}: loss {loss} dev macro-F1 {metrics['macro_f1']:.4f}")
        if step > 0 and metrics["macro_f1"] > best["score"]:
            k, v = prefix.kv()
            best = {
                "score": metrics["macro_f1"],
                "step": step,
                "kv": (k.detach().clone(), v.detach().clone()),
                "metrics": metrics,
            }
            bad = 0
            return False
        if step > 0:
            bad += 1
        return bad >= cfg.patience

    check(0, None)
    while step < cfg.max_steps:
        if not order:
            order = list(range(len(train)))
            rng.shuffle(order)
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        t0 = time.perf_counter()
        hidden, mask = train_cache.batch(s, idx)
        key, value = prefix.kv()
        pooled = top_pooled(backbone, hidden, mask, s, key, value)
        loss = nn.functional.cross_entropy(head(drop(pooled)), y_train[idx])
        if cfg.preserve:
            loss = loss + cfg.preserve * preservation_loss(pooled, train_cache.base[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step_seconds += time.perf_counter() - t0
        step += 1
        if (step % cfg.eval_every == 0 or step == cfg.max_steps) and check(
            step, round(float(loss.item()), 4)
        ):
            break
    if best["kv"] is None:  # no check after step 0 (max_steps 0): keep the initial prefix
        k, v = prefix.kv()
        best["kv"] = (k.detach().clone(), v.detach().clone())
    key, value = best["kv"]
    seconds = time.perf_counter() - start
    meta = trunk_metadata(backbone, train, dev, cfg, names, best, step, seconds, step_seconds, history)
    return TrunkTrainResult(key, value, meta, history, step_seconds / max(1, step))


def recipe_name(cfg: TrunkTrainConfig) -> str:
    """A short label of the recipe: depth, init, projection, preservation weight, schedule."""
    parts = [f"S={cfg.first_layer}", "projection" if cfg.projection else f"init={cfg.init}"]
    parts.append(f"preserve={cfg.preserve:g}")
    parts.append(f"schedule={cfg.schedule}")
    return " ".join(parts)


def trunk_metadata(
    backbone: Backbone,
    train: TaskData,
    dev: TaskData,
    cfg: TrunkTrainConfig,
    names: list[str],
    best: dict[str, Any],
    steps: int,
    seconds: float,
    step_seconds: float,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    init: dict[str, Any]
    if cfg.projection:
        init = {"method": "projection", "seed": cfg.seed, "std": cfg.init_std}
    elif cfg.init == "tokens":
        init = {
            "method": "tokens",
            "seed": cfg.seed,
            "sentences": "service.method.trunk_train.INIT_SENTENCES",
        }
    else:
        init = {"method": "normal-kv", "seed": cfg.seed, "std": cfg.init_std}
    return {
        "task": train.name,
        "description": train.description,
        "labels": names,
        "dev_metrics": best["metrics"],
        "backbone_fingerprint": backbone.spec.fingerprint,
        "first_layer": str(cfg.first_layer),
        "position_convention": "none",
        "pooling": "mean",
        "prefix_len": cfg.prefix_len,
        "init": init,
        "recipe": recipe_name(cfg),
        "training": asdict(cfg)
        | {
            "method": "native K/V over a cached trunk (service.method.trunk_train)",
            "head": "dropout 0.1 + linear on the mean-pooled final layer, LP-FT",
            "steps_run": steps,
            "best_step": best["step"],
            "seconds": round(seconds, 1),
            "seconds_per_step": round(step_seconds / max(1, steps), 4),
            "dev_history": history,
            "torch_threads": torch.get_num_threads(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        },
        "data": train.provenance
        | {
            "n_train": len(train),
            "n_dev": len(dev),
            "train_counts": train.counts(),
            "train_digest": train.digest(),
        },
    }
