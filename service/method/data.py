"""Labelled text for one task, read from JSONL/CSV, subsampled and split by document.

A task's examples carry an optional ``text_pair`` and an optional ``group`` (the document a sentence
comes from): splits never put sentences of one document on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from service.fitting.task import examples_digest


@dataclass(frozen=True)
class TaskData:
    """Examples of one classification task; ``labels`` are strings, ``label_names`` their sorted set."""

    name: str
    texts: list[str]
    labels: list[str]
    pairs: list[str] | None = None
    groups: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self.texts)
        for what, col in (("labels", self.labels), ("pairs", self.pairs), ("groups", self.groups)):
            if col is not None and len(col) != n:
                raise ValueError(f"task {self.name}: {len(col)} {what} for {n} texts")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))

    def take(self, idx: Sequence[int]) -> TaskData:
        def pick(col: list[str] | None) -> list[str] | None:
            return None if col is None else [col[i] for i in idx]

        return replace(
            self,
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            pairs=pick(self.pairs),
            groups=pick(self.groups),
        )

    def digest(self) -> str:
        """Content hash of the examples (texts, pairs, labels), for caches and provenance (the data
        digest ``fit`` records too)."""
        return examples_digest(self.texts, self.labels, self.pairs)


def load_table(path: Path, name: str | None = None) -> TaskData:
    """Read ``text``, optional ``text_pair``, ``label`` (and optional ``group``) from JSONL or CSV."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ","))
    else:
        raise ValueError(f"{path}: expected .jsonl, .csv or .tsv")
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = {"text", "label"} - set(rows[0])
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    has_pair = any(r.get("text_pair") not in (None, "") for r in rows)
    has_group = any(r.get("group") not in (None, "") for r in rows)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return TaskData(
        name=name or path.stem,
        texts=[str(r["text"]) for r in rows],
        labels=[str(r["label"]) for r in rows],
        pairs=[str(r.get("text_pair") or "") for r in rows] if has_pair else None,
        groups=[str(r.get("group") or i) for i, r in enumerate(rows)] if has_group else None,
        provenance={"source": "file", "path": path.name, "sha256": sha},
    )


def subsample(data: TaskData, n: int | None, seed: int) -> TaskData:
    """At most ``n`` examples, drawn uniformly with ``seed`` (so label proportions are kept on average)."""
    if n is None or n >= len(data):
        return data
    idx = sorted(random.Random(seed).sample(range(len(data)), n))
    return data.take(idx)


def split(data: TaskData, fraction: float, seed: int) -> tuple[TaskData, TaskData]:
    """(rest, held_out) with about ``fraction`` of the examples held out, whole groups at a time.

    Without groups every example is its own group; labels are stratified by shuffling within label.
    """
    rng = random.Random(seed)
    groups = data.groups or [str(i) for i in range(len(data))]
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    # Stratify by each group's majority label so a rare class lands on both sides.
    by_label: dict[str, list[str]] = {}
    for g, members in by_group.items():
        major = Counter(data.labels[i] for i in members).most_common(1)[0][0]
        by_label.setdefault(major, []).append(g)
    held: list[int] = []
    for label in sorted(by_label):
        gs = sorted(by_label[label])
        rng.shuffle(gs)
        want = fraction * sum(len(by_group[g]) for g in gs)
        taken = 0
        for g in gs:
            if taken >= want or (taken and taken + len(by_group[g]) > want * 1.5):
                break
            held.extend(by_group[g])
            taken += len(by_group[g])
    held_set = set(held)
    rest = [i for i in range(len(data)) if i not in held_set]
    return data.take(rest), data.take(sorted(held))


def majority_accuracy(train: TaskData, test: TaskData) -> float:
    """Accuracy of always predicting ``train``'s most frequent label on ``test``."""
    top = Counter(train.labels).most_common(1)[0][0]
    return sum(label == top for label in test.labels) / max(1, len(test))


HOLDOUT_SEED = 1234  # fixed: every command carves the same test split out of a data set


def holdout(data: TaskData, fraction: float) -> tuple[TaskData, TaskData]:
    """(pool, test): the test split of a target task, by document; prefixes trained on a target task
    (for task similarity) only ever see ``pool``."""
    return split(data, fraction, HOLDOUT_SEED)


TEST_CAP = 1000  # at most this many held-out test texts measure a prefix (the source value)


def protocol_splits(
    data: TaskData, *, holdout_fraction: float, max_examples: int | None, dev_fraction: float, seed: int
) -> tuple[TaskData, TaskData, TaskData | None]:
    """(train, dev, test) of a source task: the fixed :func:`holdout` test split first (at most
    :data:`TEST_CAP` texts; None without a holdout), then at most ``max_examples`` of the rest
    drawn with ``seed`` and split ``dev_fraction`` by document."""
    test = None
    if holdout_fraction:
        data, test = holdout(data, holdout_fraction)
        test = subsample(test, TEST_CAP, 0)
    train, dev = split(subsample(data, max_examples, seed), dev_fraction, seed)
    return train, dev, test
