"""The one path from labelled examples to head parameters, for ``python -m service fit`` and the
server's fit job alike (so both write the same bytes from the same examples and seed).

1. The inputs to choose from: ``base`` and every enabled prefix of one registry snapshot.
2. Vectors: the examples through the embedding pipeline (the batcher, as ``/embed``), one pass per
   text over every input, in requests of ``chunk_texts`` texts, so the fit never holds more than one
   of its own batches in the queue ahead of other traffic.
3. The choice and the fit (CPU-bound: scikit-learn, one BLAS thread; ``similarity``'s quick prefix,
   torch) in a thread of its own at a lower scheduling priority, so the event loop and the batcher
   keep their CPU.
4. :class:`HeadParams` for the one writer (:mod:`service.heads.writer`): the caller writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from service.engine.prefix import LoadedPrefix
from service.fitting.fit import Fitted, select_and_fit
from service.fitting.quick import TaskEmbedding
from service.fitting.sources import FIT_CS, Budget, Progress, Sources
from service.fitting.task import FitLimits, FitTask, candidate_names, parse_select
from service.heads.head import HeadInput
from service.heads.writer import HeadParams
from service.pipeline import EmbeddingPipeline

T = TypeVar("T")
FIT_NICE = 10  # the fit thread's niceness (Linux: per thread); the batcher's threads keep theirs


@dataclass(frozen=True)
class FitOutcome:
    params: HeadParams
    fitted: Fitted
    candidates: tuple[str, ...]
    embed_seconds: float

    def result(self) -> dict[str, Any]:
        """The job's result and the command's summary: the choice, the measures and the table."""
        return {
            **self.fitted.summary(),
            "candidates": list(self.candidates),
            "embed_seconds": round(self.embed_seconds, 3),
            "table": self.fitted.table(),
        }


async def embed_examples(
    pipeline: EmbeddingPipeline,
    texts: tuple[str, ...],
    names: list[str],
    *,
    chunk_texts: int,
    progress: Progress | None = None,
    budget: Budget | None = None,
) -> tuple[np.ndarray, tuple[LoadedPrefix, ...]]:
    """float32 [N, len(names), dim] vectors of ``texts`` and the inputs (their digests, and their
    parameters for ``similarity``), all from one snapshot."""
    selection = pipeline.select(pipeline.snapshot(), names)
    parts = []
    for start in range(0, len(texts), chunk_texts):
        if budget is not None:
            budget.check("embedding its examples")
        out = await pipeline.embed(texts[start : start + chunk_texts], selection, route="fit")
        parts.append(out.vectors)
        if progress is not None:
            progress("embed", min(len(texts), start + chunk_texts), len(texts))
    return np.concatenate(parts), tuple(selection.prefixes)


async def in_fit_thread(work: Callable[[], T], stop: threading.Event) -> T:
    """``work()`` in a new thread at niceness :data:`FIT_NICE`. Cancelled, it sets ``stop`` (the fit
    checks it between CV searches) and waits for the thread to end before it re-raises, so no fit
    outlives its job."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)  # type: ignore[arg-type]

    def target() -> None:
        # not Linux, or not allowed: run at the normal priority
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FIT_NICE)
        try:
            value = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=target, name="prefix-embed-fit", daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await done
        raise


def head_params(task: FitTask, fitted: Fitted, sources: Sources, pooling: str | None) -> HeadParams:
    """The head file's contents: the map, its inputs at their digests, and what the fit measured
    (nothing that differs between two fits of the same examples and seed: no times, no paths)."""
    model, choice = fitted.model, fitted.choice
    digests = dict(zip(sources.names, sources.digests, strict=True))
    ex = task.examples
    metadata: dict[str, Any] = {
        **({"pooling": pooling} if pooling is not None else {}),
        "description": task.description or f"fitted from {len(ex.texts)} labelled examples",
        "fit": {
            "method": "standardized logistic regression (service/fitting/probe.py), C by stratified CV",
            "select": task.select,
            "rule": choice.rule,
            "weights": None
            if choice.weights is None
            else dict(zip(choice.inputs, choice.weights, strict=True)),
            "stacked": choice.stacked,
            "c": choice.cv.c,
            "cs": list(FIT_CS),
            "seed": task.seed,
            "candidates": [{"name": n, "digest": digests[n]} for n in sources.names],
            "table": fitted.table(),
        },
        "metrics": {
            "cv_accuracy": choice.cv_accuracy,
            "cv_accuracy_base": fitted.cv_base,
            "cv_accuracy_all": fitted.cv_all,
        },
        "data": {
            "digest": ex.digest(),
            "examples": len(ex.texts),
            "labels": dict(sorted(Counter(ex.labels).items())),
        },
    }
    inputs = [HeadInput(n, digests[n]) for n in choice.inputs]
    return model.head_params(inputs, task=task.name, normalize=True, metadata=metadata)


async def fit_head(
    pipeline: EmbeddingPipeline,
    task: FitTask,
    *,
    limits: FitLimits,
    chunk_texts: int,
    timeout_s: float | None = None,
    progress: Progress | None = None,
    model: Path | None = None,
) -> FitOutcome:
    """Embed ``task``'s examples under every candidate input, choose, fit: the head's parameters.
    ``model``: the served backbone's folder, for ``similarity``'s quick prefix (torch, loaded by that
    rule only; None: the rule is refused)."""
    budget = Budget.of(timeout_s)
    names = candidate_names(pipeline.snapshot())
    parse_select(task.select, names)  # before the examples are embedded
    task.examples.check_size(len(names), pipeline.dim, limits)
    start = time.perf_counter()
    vectors, inputs = await embed_examples(
        pipeline, task.examples.texts, names, chunk_texts=chunk_texts, progress=progress, budget=budget
    )
    embed_seconds = time.perf_counter() - start
    sources = Sources(tuple(names), tuple(p.digest for p in inputs), vectors, task.examples.labels)
    embedding = None
    if model is not None:
        prefixes = {p.name: p for p in inputs if not p.builtin}
        embedding = TaskEmbedding(model, task.examples.texts, task.examples.labels, prefixes, seed=task.seed)
    fitted = await in_fit_thread(
        lambda: select_and_fit(
            sources, task.select, seed=task.seed, budget=budget, progress=progress, task_embedding=embedding
        ),
        budget.stop,
    )
    params = head_params(task, fitted, sources, pipeline.registry.pooling)
    return FitOutcome(params, fitted, tuple(names), embed_seconds)
