"""From the examples' vectors to a head: choose the inputs (``--select``), fit the probe, and compare
the chosen set's CV accuracy with ``base`` alone and with every source (``all``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from service.engine.prefix import BASE_NAME
from service.fitting.model import LinearModel, probe_model, stacked_model
from service.fitting.probe import refit
from service.fitting.quick import TaskEmbedding
from service.fitting.rules import RULES, Choice, fixed
from service.fitting.sources import Budget, Evaluator, Progress, Sources
from service.fitting.task import parse_select

# ``--select auto``: the rule that measured best on the three target tasks with the 11 shipped prefixes
# as candidates, chosen on the dev draws only (the best mean dev accuracy among the rules within 0.5
# points of base and of all on every target's dev; RESULTS.md, issue 29).
AUTO = "best-cv"


@dataclass(frozen=True)
class Fitted:
    """The chosen inputs, the linear map over them, and the measures a head records."""

    select: str  # as asked (``auto``, a rule, or names)
    choice: Choice
    model: LinearModel
    cv_base: float
    cv_all: float
    seconds: float

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.choice.inputs

    def table(self) -> list[dict[str, Any]]:
        """What was tried (the rule's own rows, then the references), in order."""
        rows = [t.doc() for t in self.choice.trials]
        rows.append({"rule": "base", "inputs": [BASE_NAME], "cv_accuracy": self.cv_base, "note": "reference"})
        rows.append(
            {"rule": "all", "inputs": "every source", "cv_accuracy": self.cv_all, "note": "reference"}
        )
        return rows

    def summary(self) -> dict[str, Any]:
        c = self.choice
        return {
            "select": self.select,
            "rule": c.rule,
            "inputs": list(c.inputs),
            "weights": None if c.weights is None else dict(zip(c.inputs, c.weights, strict=True)),
            "stacked": c.stacked,
            "c": c.cv.c,
            "cv_accuracy": c.cv_accuracy,
            "cv_accuracy_base": self.cv_base,
            "cv_accuracy_all": self.cv_all,
            "detail": c.detail,
            "seconds": round(self.seconds, 3),
        }


def _model(ev: Evaluator, choice: Choice) -> LinearModel:
    src, seed = ev.sources, ev.seed
    if choice.stacked:
        probes = [refit(src.features((n,)), src.labels, ev.cv((n,)), seed=seed) for n in choice.inputs]
        meta_x = np.concatenate([ev.cv((n,)).decision for n in choice.inputs], axis=1)
        return stacked_model(probes, refit(meta_x, src.labels, choice.cv, seed=seed))
    weights = None if choice.weights is None else np.repeat(np.asarray(choice.weights), src.dim)
    fitted = refit(src.features(choice.inputs), src.labels, choice.cv, seed=seed, weights=weights)
    return probe_model(fitted)


def select_and_fit(
    sources: Sources,
    select: str = "auto",
    *,
    seed: int = 0,
    budget: Budget | None = None,
    progress: Progress | None = None,
    evaluator: Evaluator | None = None,
    task_embedding: TaskEmbedding | None = None,
) -> Fitted:
    """Choose the inputs by ``select`` and fit the head's map; deterministic for a seed (one BLAS
    thread: the sums do not depend on a thread count, and a shared CPU is not oversubscribed).
    ``evaluator`` (of ``sources``): CV searches shared with other fits of the same examples (the
    experiment that measures every rule). ``task_embedding``: the examples' texts and the sources'
    prefixes, for ``similarity`` (it trains a quick prefix; without it that rule is refused)."""
    with threadpool_limits(1):
        ev = evaluator or Evaluator(
            sources, seed=seed, budget=budget, progress=progress, task_embedding=task_embedding
        )
        return _select_and_fit(ev, select)


def _select_and_fit(ev: Evaluator, select: str) -> Fitted:
    start = time.perf_counter()
    sources = ev.sources
    rule = parse_select(select, sources.names)
    rule = AUTO if rule == "auto" else rule
    choice = fixed(ev, rule, "names") if isinstance(rule, tuple) else RULES[rule](ev)
    ev.plan("references", 2)
    cv_base, cv_all = ev.cv((BASE_NAME,)).cv_accuracy, ev.cv(sources.names).cv_accuracy
    ev.plan("fit", 1)
    model = _model(ev, choice)
    ev.done += 1
    ev.plan("done", 0)
    return Fitted(select, choice, model, cv_base, cv_all, time.perf_counter() - start)
