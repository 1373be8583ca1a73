"""The training loop shared by both kinds of prefix (service/method/learners.py).

LP-FT: each task's head (dropout 0.1 + linear) starts as a logistic regression on the initial
prefix's vectors, whose dev score is the step-0 reference. AdamW on the prefix and the heads (own
learning rates), a constant or cosine schedule, round-robin tasks, dev macro-F1 every
``eval_every`` steps; the best prefix and its heads are kept. It stops after ``patience`` checks
without a better dev score, or at once when the dev score is perfect (nothing can beat it; at
step 0 the untrained prefix is then kept).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from tqdm import tqdm

from service.method.data import TaskData, majority_accuracy
from service.method.learners import Learner
from service.method.probes import class_rows
from service.method.recipe import TrainConfig

if TYPE_CHECKING:
    from service.method.train import TaskSplit


def batches(n: int, size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless shuffled epochs of index batches."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, size):
            yield order[i : i + size]


def label_ids(data: TaskData, names: list[str]) -> torch.Tensor:
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[label] for label in data.labels], dtype=torch.long)


def lr_factor(schedule: str, max_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of each step: 1, or a 10 % linear warm-up then cosine decay to 0."""
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


def probe_head(linear: nn.Linear, x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> None:
    """Set ``linear`` to a logistic regression (C = 1, unstandardized) fitted on (x, y): LP-FT's start."""
    lr = LogisticRegression(C=1.0, max_iter=1000, random_state=seed).fit(x, y)
    w, b = class_rows(lr.coef_, lr.intercept_, lr.classes_.tolist(), n_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w))
        linear.bias.copy_(torch.from_numpy(b))


def dev_metrics(pred: np.ndarray, split: TaskSplit, names: list[str]) -> dict[str, float]:
    gold = label_ids(split.dev, names).numpy()
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(
            f1_score(gold, pred, average="macro", labels=list(range(len(names))), zero_division=0)
        ),
        "majority_accuracy": majority_accuracy(split.train, split.dev),
        "n_dev": len(split.dev),
    }


class Loop:
    """One training run: build the heads (call after the learner, so the seeded draws come in the
    same order), then :meth:`run`; afterwards the learner and the heads hold the kept step."""

    def __init__(
        self,
        learner: Learner,
        tasks: list[TaskSplit],
        cfg: TrainConfig,
        progress: bool,
        on_step: Callable[[int], None] | None = None,
    ):
        self.learner, self.tasks, self.cfg, self.progress = learner, tasks, cfg, progress
        self.on_step = on_step  # called after each step with the steps done (it may raise to stop)
        self.names = {t.name: sorted(set(t.train.labels) | set(t.dev.labels)) for t in tasks}
        hidden = learner.spec.hidden_size
        self.heads = nn.ModuleDict(
            {
                t.name: nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, len(self.names[t.name])))
                for t in tasks
            }
        )
        self.linear = {t.name: cast(nn.Linear, cast(nn.Sequential, self.heads[t.name])[1]) for t in tasks}
        self.labels = {t.name: label_ids(t.train, self.names[t.name]) for t in tasks}
        self.best: dict[str, Any] = {"score": -1.0, "step": 0, "state": None, "metrics": {}}
        self.history: list[dict[str, Any]] = []
        self.checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps = self.seen = self.bad_checks = 0
        self.step_seconds = 0.0
        self.stopped: str | None = None

    def run(self) -> None:
        cfg, learner = self.cfg, self.learner
        if cfg.head_init == "probe":
            for t in self.tasks:
                x = learner.vectors(t.name, 0).numpy()
                probe_head(
                    self.linear[t.name], x, self.labels[t.name].numpy(), len(self.names[t.name]), cfg.seed
                )
        opt = torch.optim.AdamW(
            [
                {"params": learner.trainable(), "lr": cfg.lr},
                {"params": list(self.heads.parameters()), "lr": cfg.head_lr},
            ],
            weight_decay=cfg.weight_decay,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg.schedule, cfg.max_steps))
        rng = random.Random(cfg.seed)
        streams = {t.name: batches(len(t.train), cfg.batch_size, rng) for t in self.tasks}
        done = cfg.head_init == "probe" and self.check(None)
        # the bar starts here, so its rate counts training steps (the caches and probe fit are done)
        self.bar = tqdm(
            total=cfg.max_steps,
            desc=f"train {'+'.join(self.names)}",
            disable=not self.progress or done,
            mininterval=2,
        )
        while not done and self.steps < cfg.max_steps:
            task = self.tasks[self.steps % len(self.tasks)]  # round robin: an equal share of steps per task
            idx = next(streams[task.name])
            t0 = time.perf_counter()
            self.heads.train()
            pooled = learner.batch(task.name, idx)
            loss = nn.functional.cross_entropy(self.heads[task.name](pooled), self.labels[task.name][idx])
            if cfg.preserve:
                loss = loss + cfg.preserve * preservation_loss(pooled, learner.base_batch(task.name, idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            self.step_seconds += time.perf_counter() - t0
            self.steps += 1
            self.seen += len(idx)
            self.bar.update(1)
            if self.on_step is not None:
                self.on_step(self.steps)
            best = f"{self.best['score']:.3f}" if self.best["state"] is not None else "-"
            self.bar.set_postfix(loss=f"{loss.item():.3f}", best_dev=best, refresh=False)
            if self.steps in cfg.checkpoint_steps:
                self.checkpoints[self.steps] = learner.key_value()
            if self.steps % cfg.eval_every == 0 or self.steps == cfg.max_steps:
                done = self.check(round(float(loss.item()), 4))
        self.bar.close()
        self._restore()

    def check(self, loss: float | None) -> bool:
        """Dev metrics now; keep the best prefix; True when training should stop."""
        step = self.steps
        self.heads.eval()
        metrics = {}
        for t in self.tasks:
            with torch.no_grad():
                pred = self.heads[t.name](self.learner.vectors(t.name, 1)).argmax(-1).numpy()
            metrics[t.name] = dev_metrics(pred, t, self.names[t.name])
        score = float(np.mean([m["macro_f1"] for m in metrics.values()]))
        self.history.append({"step": step, "loss": loss, "macro_f1": round(score, 4), "dev": metrics})
        if self.progress:
            tqdm.write(f"step {step}: dev macro-F1 {score:.4f}", file=sys.stderr)
        if step == 0:  # the untrained prefix with the probe head: a reference, kept only if perfect
            if score >= 1.0:
                self._keep(score, metrics)
                self.stopped = (
                    "dev macro-F1 is 1.0 at step 0 (the probe on the untrained prefix): nothing to improve"
                )
            return self.stopped is not None
        if score > self.best["score"]:
            self._keep(score, metrics)
            self.bad_checks = 0
            if score >= 1.0:
                self.stopped = f"dev macro-F1 reached 1.0 at step {step}: nothing can beat it"
            return self.stopped is not None
        self.bad_checks += 1
        if self.bad_checks >= self.cfg.patience:
            self.stopped = (
                f"no better dev macro-F1 in {self.cfg.patience} checks after step {self.best['step']}"
            )
        return self.stopped is not None

    def _keep(self, score: float, metrics: dict[str, Any]) -> None:
        self.best = {
            "score": score,
            "step": self.steps,
            "metrics": metrics,
            "state": [p.detach().clone() for p in self.learner.trainable()],
            "heads": {k: v.detach().clone() for k, v in self.heads.state_dict().items()},
        }

    def _restore(self) -> None:
        """Put the kept prefix and heads back (the last ones when no check after step 0 kept any)."""
        if self.best["state"] is None:
            return
        with torch.no_grad():
            for p, w in zip(self.learner.trainable(), self.best["state"], strict=True):
                p.copy_(w)
        self.heads.load_state_dict(self.best["heads"])
