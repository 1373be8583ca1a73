"""Which inputs a head reads (``fit --select``): every rule chooses from ``base`` and the enabled
prefixes by cross-validation on the examples only, never on a test split.

- ``all`` / ``base`` / ``NAME,NAME``: a fixed set.
- ``greedy``: forward selection from ``base``; a prefix joins only when it raises the CV accuracy by
  more than :data:`MIN_GAIN` and by more than one paired standard error (CV noise at a thousand
  examples is larger than most single-source gains).
- ``weighted``: every source, each block scaled by ``exp((acc_b - best) / tau)`` from its own CV
  accuracy (a scale per block is a penalty per block); tau from :data:`TAUS` by CV, the one-SE rule
  preferring the least tuned (``tau = inf`` is ``all``); blocks scaled below :data:`MIN_WEIGHT` dropped.
- ``stacked``: one probe per source, a probe over their out-of-fold logits on top; both linear, so
  the head is one linear map (:func:`service.fitting.model.stacked_model`).
- ``best-cv``: ``greedy``, ``weighted`` and ``stacked`` on one evaluator (their CV searches shared),
  the one with the best CV accuracy on the examples kept (ties: in that order).
- ``similarity``: the sources ranked by the registry's similarity to a quick prefix trained on the
  examples (:mod:`service.fitting.quick`, thrown away after), then ``base`` + the top k, k from
  :data:`TOP_KS` by CV, the one-SE rule preferring fewer.

Each rule returns a :class:`Choice` and the :class:`Trial` rows of what it tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from service.engine.prefix import BASE_NAME
from service.errors import InvalidInput
from service.fitting.probe import CrossValidated, cross_validate
from service.fitting.sources import Evaluator, paired_se
from service.fitting.task import FOLDS

MIN_GAIN = 0.005  # greedy: half a point at least, and more than one paired SE
TAUS = (math.inf, 0.05, 0.02, 0.01, 0.005)  # weighted: inf = every block at 1 (the ``all`` set)
MIN_WEIGHT = 0.05  # weighted: a block scaled below this costs a prefix per text for nothing
META_CS = (0.001, 0.01, 0.1, 1.0)  # stacked: the meta-probe reads a few logits per source
TOP_KS = (1, 2, 3, 5, 8)  # similarity: how many of the most similar sources join base (CV chooses)
Tried = TypeVar("Tried", bound=tuple[Any, ...])  # a tried setting, its CrossValidated last


@dataclass(frozen=True)
class Trial:
    """One row of the table a fit prints: what was tried and its CV accuracy."""

    rule: str
    inputs: tuple[str, ...]
    cv_accuracy: float
    note: str = ""

    def doc(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "inputs": list(self.inputs),
            "cv_accuracy": self.cv_accuracy,
            "note": self.note,
        }


@dataclass(frozen=True)
class Choice:
    """The inputs a rule chose, their per-input scales (``weighted``) or stacking, and its CV score."""

    rule: str
    inputs: tuple[str, ...]
    cv: CrossValidated
    weights: tuple[float, ...] | None = None
    stacked: bool = False
    trials: tuple[Trial, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def cv_accuracy(self) -> float:
        return self.cv.cv_accuracy


def fixed(ev: Evaluator, names: tuple[str, ...], rule: str) -> Choice:
    ev.plan(rule, 1)
    cv = ev.cv(names)
    return Choice(rule, names, cv, trials=(Trial(rule, names, cv.cv_accuracy),))


def greedy(ev: Evaluator) -> Choice:
    names = ev.sources.names
    current: tuple[str, ...] = (BASE_NAME,)
    ev.plan("greedy", len(names))
    cur = ev.cv(current)
    trials = [Trial("greedy", current, cur.cv_accuracy, "start")]
    remaining = [n for n in names if n != BASE_NAME]
    while remaining:
        ev.plan("greedy", len(remaining) - 1)
        tried = {n: ev.cv((*current, n)) for n in remaining}
        best = max(remaining, key=lambda n: (tried[n].cv_accuracy, -remaining.index(n)))
        gain = tried[best].cv_accuracy - cur.cv_accuracy
        se = paired_se(tried[best].correct, cur.correct)
        kept = gain > max(MIN_GAIN, se)
        note = f"{'+' if kept else 'stop: '}{best} gain {gain * 100:+.1f} pt (SE {se * 100:.1f})"
        trials.append(Trial("greedy", (*current, best), tried[best].cv_accuracy, note))
        if not kept:
            break
        current, cur = (*current, best), tried[best]
        remaining.remove(best)
    return Choice("greedy", current, cur, trials=tuple(trials), detail={"min_gain": MIN_GAIN})


def per_source(ev: Evaluator) -> dict[str, CrossValidated]:
    """Each source alone (shared by ``weighted`` and ``stacked``)."""
    ev.plan("sources", len(ev.sources.names))
    return {n: ev.cv((n,)) for n in ev.sources.names}


def block_weights(alone: dict[str, CrossValidated], tau: float) -> dict[str, float]:
    """``exp((acc - best) / tau)`` per source, those under :data:`MIN_WEIGHT` left out."""
    best = max(cv.cv_accuracy for cv in alone.values())
    if math.isinf(tau):
        return dict.fromkeys(alone, 1.0)
    w = {n: math.exp((cv.cv_accuracy - best) / tau) for n, cv in alone.items()}
    return {n: round(x, 6) for n, x in w.items() if x >= MIN_WEIGHT}


def one_se(tried: list[Tried]) -> Tried:
    """The one-SE rule: the first of ``tried`` (ordered from the least tuned; each a tuple whose last
    item is its :class:`CrossValidated`) within one paired SE of the best CV accuracy."""
    best = max(tried, key=lambda t: t[-1].cv_accuracy)
    return next(
        t
        for t in tried
        if t[-1].cv_accuracy >= best[-1].cv_accuracy - paired_se(best[-1].correct, t[-1].correct)
    )


def weighted(ev: Evaluator) -> Choice:
    alone = per_source(ev)
    ev.plan("weighted", len(TAUS))
    tried: list[tuple[float, tuple[str, ...], tuple[float, ...], CrossValidated]] = []
    for tau in TAUS:
        w = block_weights(alone, tau)
        names = tuple(n for n in ev.sources.names if n in w)
        weights = tuple(w[n] for n in names)
        cv = ev.cv(names) if all(x == 1.0 for x in weights) else ev.cv(names, weights)
        tried.append((tau, names, weights, cv))
    tau, names, weights, cv = one_se(tried)  # the least tuned scale (largest tau) within one SE of the best
    trials = tuple(
        Trial("weighted", t[1], t[3].cv_accuracy, f"tau {t[0]:g}" + (" (chosen)" if t[0] == tau else ""))
        for t in tried
    )
    flat = all(x == 1.0 for x in weights)
    detail = {"tau": None if math.isinf(tau) else tau, "alone": {n: c.cv_accuracy for n, c in alone.items()}}
    return Choice("weighted", names, cv, None if flat else weights, trials=trials, detail=detail)


def stacked(ev: Evaluator) -> Choice:
    alone = per_source(ev)
    names = ev.sources.names
    meta_x = np.concatenate([alone[n].decision for n in names], axis=1)
    ev.plan("stacked", 1)
    meta = cross_validate(meta_x, ev.sources.labels, cs=META_CS, seed=ev.seed, folds=FOLDS)
    trial = Trial("stacked", names, meta.cv_accuracy, f"meta-probe on {meta_x.shape[1]} out-of-fold logits")
    return Choice("stacked", names, meta, stacked=True, trials=(trial,), detail={"meta_c": meta.c})


def similarity(ev: Evaluator) -> Choice:
    embedding = ev.task_embedding
    if embedding is None:
        raise InvalidInput("select similarity needs the examples' texts and the sources' prefixes (a fit's)")
    budget = ev.budget

    def step(done: int, total: int) -> None:
        if budget is not None:
            budget.check("training its quick prefix (select similarity)")
        if ev.progress is not None:
            ev.progress("quick-prefix", done, total)

    step(0, embedding.steps)
    sims, seconds = embedding.rank(step)
    ranked = [n for n in sims if n in ev.sources.names]
    ks = sorted({min(k, len(ranked)) for k in TOP_KS if ranked})
    ev.plan("similarity", len(ks))
    tried = []
    for k in ks:
        top = set(ranked[:k])
        names = tuple(n for n in ev.sources.names if n == BASE_NAME or n in top)
        tried.append((k, names, ev.cv(names)))
    k, names, cv = one_se(tried) if tried else (0, (BASE_NAME,), ev.cv((BASE_NAME,)))
    trials = tuple(
        Trial("similarity", t[1], t[2].cv_accuracy, f"top {t[0]}" + (" (chosen)" if t[0] == k else ""))
        for t in tried
    )
    detail = {
        "k": k,
        "ranking": {n: None if x is None else round(x, 4) for n, x in sims.items()},
        "quick_steps": embedding.steps,
        "quick_seconds": round(seconds, 3),
    }
    return Choice("similarity", names, cv, trials=trials, detail=detail)


BEST_OF = ("greedy", "weighted", "stacked")  # best-cv's candidates: the three CV rules


def best_cv(ev: Evaluator) -> Choice:
    choices = [RULES[name](ev) for name in BEST_OF]
    chosen = max(choices, key=lambda c: c.cv_accuracy)  # the first of equals
    trials = tuple(t for c in choices for t in c.trials)
    detail = {"chosen": chosen.rule, "cv": {c.rule: c.cv_accuracy for c in choices}, **chosen.detail}
    return Choice("best-cv", chosen.inputs, chosen.cv, chosen.weights, chosen.stacked, trials, detail)


RULES: dict[str, Callable[[Evaluator], Choice]] = {
    "greedy": greedy,
    "weighted": weighted,
    "stacked": stacked,
    "similarity": similarity,
    "best-cv": best_cv,
    "all": lambda ev: fixed(ev, ev.sources.names, "all"),
    "base": lambda ev: fixed(ev, (BASE_NAME,), "base"),
}
