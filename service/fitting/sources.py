"""The examples' vectors under every candidate input, and cross-validation of input sets over them.

A head reads ``base`` and any subset of the enabled prefixes, each vector L2-normalized, concatenated
in the order of its inputs (``normalize: true``). :class:`Sources` holds those vectors for the fit's
examples (one pass per text through the pipeline); :class:`Evaluator` cross-validates input sets on
them with the one probe (:func:`service.fitting.probe.cross_validate`), each set once per fit (the
rules share the results), within the fit's time budget, reporting each CV search as progress.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from service.errors import FitTimedOut
from service.fitting.probe import CrossValidated, cross_validate
from service.fitting.task import FOLDS
from service.wire.encodings import l2_normalize

if TYPE_CHECKING:
    from service.fitting.quick import TaskEmbedding

# The C grid of every fit (standardized logistic regression on 384..5,000 dimensions from a few hundred
# to 20,000 examples): the grid of RESULTS.md's probes and the shipped heads.
FIT_CS = (0.001, 0.01, 0.1)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class FitStopped(Exception):
    """The fit was told to stop (its job was cancelled): nothing is written."""


@dataclass
class Budget:
    """When a fit must stop: past ``deadline`` (``time.monotonic()`` seconds, ``fit_timeout_s`` from
    its start) or once ``stop`` is set; checked between embedding requests and between CV searches."""

    deadline: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def of(cls, timeout_s: float | None) -> Budget:
        return cls(None if timeout_s is None else time.monotonic() + timeout_s)

    def check(self, doing: str) -> None:
        if self.stop.is_set():
            raise FitStopped(f"stopped while {doing}")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FitTimedOut(
                f"the fit ran past its time limit (fit_timeout_s) while {doing}; nothing was written"
            )


@dataclass(frozen=True)
class Sources:
    """``vectors`` float32 [N, len(names), dim] (unnormalized, as the pipeline returns them) of the
    examples under ``names`` (``base`` first, then the prefixes by name), their digests, and labels."""

    names: tuple[str, ...]
    digests: tuple[str, ...]
    vectors: np.ndarray
    labels: tuple[str, ...]
    unit: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit", l2_normalize(self.vectors.astype(np.float32)))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[2])

    def index(self, names: Sequence[str]) -> list[int]:
        return [self.names.index(n) for n in names]

    def features(self, names: Sequence[str]) -> np.ndarray:
        """[N, len(names) * dim]: the chosen inputs' normalized vectors, joined in that order."""
        return self.unit[:, self.index(names)].reshape(len(self.labels), -1)


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the mean of ``a - b`` (per-example out-of-fold correctness of two sets)."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("inf")


@dataclass
class Evaluator:
    """Cross-validates input sets of ``sources`` (cached by set and weights) within ``budget``, counting
    each search as a step of ``progress``. ``task_embedding``: what ``similarity`` ranks the sources
    with (the examples' texts and the sources' prefixes; None: that rule is not available)."""

    sources: Sources
    seed: int = 0
    budget: Budget | None = None
    progress: Progress | None = None
    task_embedding: TaskEmbedding | None = None
    stage: str = "select"
    planned: int = 0
    done: int = 0
    _cache: dict[tuple[tuple[str, ...], tuple[float, ...] | None], CrossValidated] = field(
        default_factory=dict
    )

    def plan(self, stage: str, more: int) -> None:
        """Announce ``more`` searches of ``stage`` (the total grows as rules decide what to try)."""
        self.stage = stage
        self.planned += more
        self._report()

    def cv(self, names: Sequence[str], weights: Sequence[float] | None = None) -> CrossValidated:
        key = (tuple(names), None if weights is None else tuple(weights))
        if key in self._cache:
            return self._cache[key]
        if self.budget is not None:
            self.budget.check("choosing its inputs")
        per_dim = (
            None if weights is None else np.repeat(np.asarray(weights, dtype=np.float64), self.sources.dim)
        )
        result = cross_validate(
            self.sources.features(names),
            self.sources.labels,
            cs=FIT_CS,
            seed=self.seed,
            folds=FOLDS,
            weights=per_dim,
        )
        self._cache[key] = result
        self.done += 1
        self.planned = max(self.planned, self.done)
        self._report()
        return result

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.stage, self.done, self.planned)
