"""Train one prefix on one source task (or, as the multi-task baseline, on several).

A linear head per task reads the prefixed vector (mean pooled final layer, as served, not
normalized); only the prefix and the heads learn (service/method/loop.py). The prefix is native
over a cached trunk (``first_layer`` S) or PEFT on all layers (``first_layer`` None):
service/method/learners.py. The result holds the kept prefix, its metadata, and each task's head
with the vectors it reads, for a head file beside the prefix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.engine.backbone import Backbone, load_backbone
from service.method.data import TaskData
from service.method.learners import Learner, PeftLearner, TrunkLearner
from service.method.loop import Loop
from service.method.recipe import TrainConfig
from service.method.train_metadata import training_metadata
from service.method.trunk import TrunkCache


@dataclass(frozen=True)
class TaskSplit:
    """A task's training and dev examples."""

    train: TaskData
    dev: TaskData

    @property
    def name(self) -> str:
        return self.train.name


@dataclass(frozen=True)
class TrainedHead:
    """A task's linear head as trained with the prefix, at the kept step: the probability of
    ``labels[k]`` is ``softmax(weight @ x + bias)[k]`` for the prefix's pooled vector x (mean pooled
    final layer, **not** L2-normalized: ``normalize`` False; texts cut to ``max_length`` tokens)."""

    task: str
    labels: list[str]
    weight: np.ndarray  # float32 [classes, hidden]
    bias: np.ndarray  # float32 [classes]
    max_length: int
    normalize: bool = False
    pooling: str = "mean"


@dataclass
class TrainResult:
    key: torch.Tensor  # the kept prefix, native layout [layers - S, heads, Lp, head_dim]
    value: torch.Tensor
    metadata: dict[str, Any]
    learner: Learner  # holds the kept prefix: encode() gives the vectors its heads read
    heads: dict[str, TrainedHead]
    history: list[dict[str, Any]]
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    stopped: str | None = None  # why training ended before max_steps, when it did

    @property
    def head(self) -> TrainedHead:
        """The head of a single-task prefix."""
        (head,) = self.heads.values()
        return head

    def encode(self, data: TaskData) -> tuple[np.ndarray, np.ndarray]:
        """(prefixed, base) float32 [N, hidden] vectors of ``data`` under the kept prefix: exactly the
        vectors the heads read, and the plain backbone's."""
        prefixed, base = self.learner.encode(data)
        return prefixed.numpy(), base.numpy()


def build_learner(
    model: Backbone | Path,
    tasks: list[TaskSplit],
    cfg: TrainConfig,
    caches: dict[str, TrunkCache] | None = None,
) -> Learner:
    splits = {t.name: (t.train, t.dev) for t in tasks}
    if cfg.peft:
        return PeftLearner.build(model.path if isinstance(model, Backbone) else Path(model), splits, cfg)
    if not isinstance(model, Backbone):
        model = load_backbone(Path(model), device="cpu", dtype="float32")
    return TrunkLearner(model, splits, cfg, caches)


def train_prefix(
    model: Backbone | Path,
    tasks: list[TaskSplit],
    cfg: TrainConfig,
    *,
    progress: bool = True,
    threads: int | None = None,
    caches: dict[str, TrunkCache] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train one prefix on ``tasks`` (one task: a source prefix; several: the multi-task baseline).
    ``model``: a loaded backbone or its folder; ``caches``: trunk caches by data digest (see
    :class:`~service.method.learners.TrunkLearner`), shared between runs on one data set; ``on_step``:
    called after each training step with the steps done (a progress hook; it may raise to stop)."""
    start = time.perf_counter()  # the time reported covers the caches, the probe fit and tuning
    if threads:
        torch.set_num_threads(threads)
    learner = build_learner(model, tasks, cfg, caches)
    loop = Loop(learner, tasks, cfg, progress, on_step)
    loop.run()
    key, value = learner.key_value()
    heads = {
        name: TrainedHead(
            name,
            loop.names[name],
            lin.weight.detach().numpy().copy(),
            lin.bias.detach().numpy().copy(),
            cfg.max_length,
        )
        for name, lin in loop.linear.items()
    }
    timing = {"seconds": time.perf_counter() - start, "step_seconds": loop.step_seconds}
    meta = training_metadata(learner.spec, tasks, cfg, loop, timing)
    return TrainResult(key, value, meta, learner, heads, loop.history, loop.checkpoints, loop.stopped)
