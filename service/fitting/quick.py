"""``--select similarity``'s task embedding: a quick, early-checkpoint prefix trained on the fit's own
examples, and the sources' similarity to it (Zhou et al. 2022, "Efficiently Tuned Parameters are Task
Embeddings": early checkpoints rank source tasks as well as converged ones).

The quick prefix is trained by the method's one training path (:func:`service.method.train.train_prefix`,
the shipped recipe: a native prefix from layer 3, its seed, so it starts from the same recorded
initial prefix as the shipped ones) for :data:`QUICK_STEPS` steps on at most :data:`QUICK_EXAMPLES`
examples (90/10 train/dev; the best dev check is kept). It is compared with each source by the
registry's similarity (:func:`service.registry.similarity.similarity`, the math of ``python -m service
similarity`` and ``GET /prefixes/similarity``), then thrown away: a head never reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.engine.backbone import Backbone, load_backbone
from service.engine.prefix import LoadedPrefix
from service.method.data import TaskData, split
from service.method.recipe import RECIPES
from service.method.train import TaskSplit, train_prefix
from service.method.trunk import TrunkCache
from service.registry.similarity import similarity

QUICK_STEPS = 50  # an early checkpoint: a sixth of the shipped recipe's 300 steps
QUICK_EXAMPLES = 2000  # the quick prefix's examples at most (its trunk cache is held in memory)
QUICK_DEV = 0.1  # the dev share of its examples (the best dev check is kept)

StepHook = Callable[[int, int], None]  # (steps done, steps planned); may raise to stop


def quick_prefix(
    backbone: Backbone,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    steps: int = QUICK_STEPS,
    seed: int = 0,
    cache: TrunkCache | None = None,
    on_step: StepHook | None = None,
) -> tuple[LoadedPrefix, float]:
    """An early-checkpoint prefix of the shipped recipe trained on (``texts``, ``labels``) over
    ``backbone`` (float32, CPU), as a loaded
    prefix (with the metadata of its recorded start), and the seconds it took. ``seed`` draws the
    subsample and the train/dev split (the prefix's own seed stays the recipe's). ``cache``: the
    texts' trunk at the recipe's depth, in order (an experiment's; the texts are then only keys and
    must be unique), else the trunk is run here."""
    t0 = time.perf_counter()
    shipped = RECIPES["shipped"]
    # the recipe's depth, or the last layer of a shallower backbone (a test's tiny model)
    depth = min(int(shipped.first_layer or 0), backbone.spec.num_layers - 1)
    cfg = replace(shipped, first_layer=depth, max_steps=steps, eval_every=max(1, steps // 2))
    idx = list(range(len(texts)))
    if len(idx) > QUICK_EXAMPLES:
        idx = sorted(np.random.default_rng(seed).permutation(len(idx))[:QUICK_EXAMPLES].tolist())
    data = TaskData("quick", [texts[i] for i in idx], [labels[i] for i in idx], groups=[str(i) for i in idx])
    train, dev = split(data, QUICK_DEV, seed)
    caches = None
    if cache is not None:
        where = {t: i for i, t in enumerate(texts)}
        caches = {d.digest(): cache.rows([where[t] for t in d.texts]) for d in (train, dev)}
    result = train_prefix(
        backbone,
        [TaskSplit(train, dev)],
        cfg,
        progress=False,
        caches=caches,
        on_step=None if on_step is None else lambda done: on_step(done, steps),
    )
    prefix = LoadedPrefix(
        "quick",
        "quick",
        result.key,
        result.value,
        "none",
        "<quick>",
        "native",
        result.metadata,
        first_layer=depth,
    )
    return prefix, time.perf_counter() - t0


def ranking(quick: LoadedPrefix, sources: dict[str, LoadedPrefix]) -> dict[str, float | None]:
    """Each source's similarity to ``quick``, most similar first (ties and incomparable ones, None,
    last, by name)."""
    sims = {n: similarity(quick, p) for n, p in sources.items()}

    def key(name: str) -> tuple[float, str]:
        value = sims[name]
        return (-(value if value is not None else -2.0), name)

    order = sorted(sims, key=key)
    return {n: sims[n] for n in order}


@dataclass(frozen=True)
class TaskEmbedding:
    """What ``--select similarity`` needs beyond the vectors: the examples, the sources' prefixes, and
    a torch backbone (or its folder, loaded on first use: the served engine may be ONNX)."""

    model: Backbone | Path
    texts: tuple[str, ...]
    labels: tuple[str, ...]
    sources: dict[str, LoadedPrefix]
    steps: int = QUICK_STEPS
    seed: int = 0
    cache: TrunkCache | None = None

    def rank(self, on_step: StepHook | None = None) -> tuple[dict[str, float | None], float]:
        """The sources ranked by similarity to a quick prefix of the examples, and its seconds."""
        model = self.model
        if not isinstance(model, Backbone):
            model = load_backbone(model, device="cpu", dtype="float32")
        quick, seconds = quick_prefix(
            model,
            self.texts,
            self.labels,
            steps=self.steps,
            seed=self.seed,
            cache=self.cache,
            on_step=on_step,
        )
        return ranking(quick, self.sources), seconds
