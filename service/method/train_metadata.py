"""The metadata a trained prefix file carries: task, labels, dev metrics, recipe, data provenance.

Enough to serve the prefix (position convention, first layer, pooling), to compare it with others
(``init``: the recorded start), and to train it again (``training`` + ``data.protocol``: see
``python -m service train --like FILE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import peft
import torch
import transformers

from service.engine.backbone import BackboneSpec
from service.method.init import init_record
from service.method.recipe import TrainConfig, recipe_label

if TYPE_CHECKING:
    from service.method.loop import Loop
    from service.method.train import TaskSplit


def training_metadata(
    spec: BackboneSpec, tasks: list[TaskSplit], cfg: TrainConfig, loop: Loop, timing: dict[str, float]
) -> dict[str, Any]:
    """The metadata of the prefix ``loop`` kept (``timing``: seconds in all, seconds of steps)."""
    names, best, history, steps = loop.names, loop.best, loop.history, loop.steps
    single = len(tasks) == 1
    first = tasks[0]
    metrics = best["metrics"] or (history[-1]["dev"] if history else {})
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    training = cfg.training_record() | {
        "method": "peft.PrefixTuning" + (" (prefix_projection)" if cfg.projection else "")
        if cfg.peft
        else "native K/V over a cached trunk (service.method.learners.TrunkLearner)",
        "head": "dropout 0.1 + linear on the mean-pooled final layer, per task"
        + (", started as a logistic regression (LP-FT)" if cfg.head_init == "probe" else ""),
        "steps_run": steps,
        "best_step": best["step"],
        "examples_seen": loop.seen,
        "stopped": loop.stopped,
        "seconds": round(timing["seconds"], 1),
        "seconds_per_step": round(timing["step_seconds"] / max(1, steps), 4),
        "dev_history": [{k: h[k] for k in ("step", "loss", "macro_f1")} for h in history],
        "torch_threads": torch.get_num_threads(),
        "versions": versions | ({"peft": peft.__version__} if cfg.peft else {}),
    }
    data = {
        t.name: t.train.provenance
        | {
            "n_train": len(t.train),
            "n_dev": len(t.dev),
            "train_counts": t.train.counts(),
            "train_digest": t.train.digest(),
            "protocol": cfg.data_record(),
        }
        for t in tasks
    }
    meta = {
        "task": first.name if single else "multitask:" + "+".join(names),
        "description": first.train.description if single else "multi-task baseline: " + ", ".join(names),
        "labels": names[first.name] if single else names,
        "dev_metrics": metrics.get(first.name) if single else metrics,
        "backbone_fingerprint": spec.fingerprint,
        "position_convention": "peft" if cfg.peft else "none",
        "pooling": "mean",
        "prefix_len": cfg.prefix_len,
        "init": init_record(cfg),
        "recipe": recipe_label(cfg),
        "training": training,
        "data": data[first.name] if single else data,
    }
    if not cfg.peft:
        meta["first_layer"] = str(cfg.first_layer)
    return meta
