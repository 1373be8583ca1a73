"""Heads from the method's classifiers, and the splits a head records.

- :func:`probe_head`: the fitted probe of :mod:`service.method.probes` (standardize + logistic
  regression) as head parameters: its ``mean``/``scale``, its coefficients as ``weight`` (one row, a
  sigmoid, for two classes, as scikit-learn fits them; a softmax over its rows otherwise).
- :func:`linear_head`: a trained linear layer (one row per label, softmax), e.g. the head ``train``
  fits beside its prefix.
- :class:`SplitRecipe`: how a source task's train/dev/test splits are carved (RESULTS.md's protocol),
  recorded in a head's metadata so that its test accuracy can be measured again on the same texts.
- :func:`head_accuracy`: a head's accuracy on served vectors, through the same function the server runs.
- :func:`write_trained_head`: ``train`` writes the head it trained beside its prefix.

All heads are written by :func:`service.heads.writer.write_head`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.fitting.model import probe_model
from service.fitting.probe import FittedProbe
from service.heads.head import HeadInput, TaskHead
from service.heads.writer import HeadParams, build_head, write_head
from service.method.corpora import load_builtin
from service.method.data import TEST_CAP, TaskData, protocol_splits

if TYPE_CHECKING:
    from service.method.train import TaskSplit, TrainResult


def probe_head(
    fitted: FittedProbe, inputs: Sequence[HeadInput], *, task: str, normalize: bool, metadata: dict[str, Any]
) -> HeadParams:
    """Head parameters carrying a fitted probe (:func:`service.fitting.probe.search_probe`): its
    standardization, and for two classes the one logit scikit-learn fits (a sigmoid head), else its
    rows (softmax): :func:`service.fitting.model.probe_model`."""
    return probe_model(fitted).head_params(inputs, task=task, normalize=normalize, metadata=metadata)


def linear_head(
    weight: np.ndarray,
    bias: np.ndarray,
    labels: Sequence[str],
    inputs: Sequence[HeadInput],
    *,
    task: str,
    normalize: bool,
    metadata: dict[str, Any],
) -> HeadParams:
    """Head parameters of a linear layer ``weight`` [labels, dim_in], ``bias`` [labels] (softmax)."""
    return HeadParams(weight, bias, list(labels), list(inputs), normalize, "softmax", task, metadata=metadata)


@dataclass(frozen=True)
class SplitRecipe:
    """A source task's splits as RESULTS.md carves them (:func:`service.method.data.protocol_splits`):
    the fixed test split by document (``holdout`` of the data, seed 1234, at most 1,000 texts), then at
    most ``pool_max`` examples (``seed``) split into train/dev (``dev_fraction``, by document)."""

    loader: str  # a built-in data set (service/method/corpora.py)
    seed: int = 0
    pool_max: int | None = 8000  # None: every example left after the holdout
    dev_fraction: float = 0.15
    holdout: float = 0.3

    def splits(self, name: str) -> tuple[TaskData, TaskData, TaskData]:
        """(train, dev, test)."""
        data = replace(load_builtin(self.loader), name=name)
        train, dev, test = protocol_splits(
            data, holdout_fraction=self.holdout, max_examples=self.pool_max, dev_fraction=self.dev_fraction,
            seed=self.seed,
        )  # fmt: skip
        assert test is not None  # holdout > 0
        return train, dev, test

    def metadata(self) -> dict[str, Any]:
        return asdict(self) | {"test_max": TEST_CAP}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> SplitRecipe:
        return cls(**{k: meta[k] for k in cls.__dataclass_fields__ if k in meta})

    @classmethod
    def of_prefix(cls, meta: dict[str, Any]) -> SplitRecipe:
        """The splits a prefix file was trained on: its built-in data set and the data protocol and
        seed it records (:func:`service.method.recipe.like`; e.g. mpnet's 2,000-example pool)."""
        from service.method.recipe import like

        cfg = like(meta).config
        return cls(
            meta["data"]["loader"], seed=int(meta["init"]["seed"]), pool_max=cfg.max_examples,
            dev_fraction=cfg.dev_fraction, holdout=cfg.holdout,
        )  # fmt: skip


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    correct: int
    n: int

    def metadata(self) -> dict[str, Any]:
        return asdict(self)


def head_accuracy(head: TaskHead, vectors: np.ndarray, labels: Sequence[str]) -> Accuracy:
    """Accuracy of ``head`` on ``vectors`` [N, len(inputs), dim] (its inputs' served vectors, in order)."""
    predicted = np.asarray(head.labels)[head.probabilities(vectors).argmax(axis=1)]
    correct = int((predicted == np.asarray(list(labels))).sum())
    return Accuracy(correct / len(labels), correct, len(labels))


def write_trained_head(
    prefix: LoadedPrefix, prefix_dir: Path, result: TrainResult, split: TaskSplit, test: TaskData | None
) -> TaskHead:
    """``train`` keeps its head: the linear head of ``split``'s task trained with ``prefix`` (written a
    moment ago to ``prefix_dir``) as ``prefix_dir/heads/TASK.safetensors``, its input that prefix at its
    digest, its dev (and, with a holdout, test) accuracy in ``metrics``. The accuracies are measured on the vectors
    the head was trained on (texts cut to the recipe's ``max_length``, recorded as ``fit.max_length``);
    the server cuts at its own token limit, which only changes texts longer than that."""
    trained = result.heads[split.name]
    meta = result.metadata
    metadata: dict[str, Any] = {
        "description": meta.get("description", trained.task),
        "pooling": trained.pooling,
        "fit": {
            "method": "linear head trained with the prefix (LP-FT), kept at the best dev step",
            "max_length": trained.max_length,
            "recipe": meta.get("recipe"),
            "best_step": meta.get("training", {}).get("best_step"),
        },
        "provenance": meta.get("data", {}),
    }
    inputs = [HeadInput(prefix.name, prefix.digest)]
    params = linear_head(
        trained.weight, trained.bias, trained.labels, inputs,
        task=trained.task, normalize=trained.normalize, metadata=metadata,
    )  # fmt: skip
    spec: BackboneSpec = result.learner.spec
    head, _ = build_head(trained.task, params, spec)
    metrics = {"dev": _accuracy_on(head, result, split.dev)}
    if test is not None:
        metrics["test"] = _accuracy_on(head, result, test)
    return write_head(
        prefix_dir, trained.task, replace(params, metadata=metadata | {"metrics": metrics}), spec
    )


def _accuracy_on(head: TaskHead, result: TrainResult, data: TaskData) -> dict[str, Any]:
    vectors = result.encode(data)[0]  # [N, hidden]: the prefix's vectors, as the head read them
    return head_accuracy(head, vectors[:, None, :], data.labels).metadata()
