"""What a fit is asked: its labelled examples, checked against the fit's limits before anything is
embedded or written, and the rule that chooses its inputs (``select``).

A bad set is refused as a whole with a message naming the problem and the limit: too few or too many
examples (413 over ``fit_max_examples``), an empty text, a label that is empty or too long, one class
only, more distinct labels than ``fit_max_labels``, a label with fewer examples than the CV folds, or
vectors that would take more than ``fit_max_vector_bytes``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.config import Settings
from service.engine.prefix import BASE_NAME
from service.errors import InvalidExamples, InvalidInput, TooManyExamples, shown, shown_list
from service.heads.format import MAX_LABEL_CHARS
from service.registry.names import NAME_RE

if TYPE_CHECKING:
    from service.registry.registry import Snapshot

FOLDS = 3  # of every CV search of a fit (stratified): each label needs at least this many examples
# The rules of service/fitting/rules.py; ``auto`` is the one that measured best (service/fitting/fit.py).
RULE_NAMES = ("greedy", "weighted", "stacked", "best-cv", "similarity", "all", "base")
SELECT_CHOICES = ("auto", *RULE_NAMES)


def examples_digest(texts: Sequence[str], labels: Sequence[str], pairs: Sequence[str] | None = None) -> str:
    """Content hash of labelled examples (texts, optional pairs, labels; 16 hex digits): the data
    digest a head records (``fit``) and a prefix records of its training examples (``train``)."""
    h = hashlib.sha256()
    for i, t in enumerate(texts):
        h.update(f"{t}\x1f{pairs[i] if pairs else ''}\x1f{labels[i]}\x1e".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FitLimits:
    """The bounds of one fit (settings ``fit_*``)."""

    max_examples: int = 20_000
    max_labels: int = 100
    max_vector_bytes: int = 512 * 1024 * 1024
    min_per_label: int = FOLDS  # stratified CV needs each label in every fold

    @classmethod
    def from_settings(cls, settings: Settings) -> FitLimits:
        return cls(settings.fit_max_examples, settings.fit_max_labels, settings.fit_max_vector_bytes)


@dataclass(frozen=True)
class Examples:
    """Checked examples: texts and their labels (strings), in order."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))

    def digest(self) -> str:
        return examples_digest(self.texts, self.labels)

    def check_size(self, inputs: int, dim: int, limits: FitLimits) -> None:
        """Refuse (413) a set whose vectors under ``inputs`` sources would exceed the byte bound."""
        need = len(self.texts) * inputs * dim * 4
        if need > limits.max_vector_bytes:
            most = limits.max_vector_bytes // (inputs * dim * 4)
            raise TooManyExamples(
                f"{len(self.texts)} examples x {inputs} inputs x {dim} dimensions is {need} bytes of vectors, "
                f"over fit_max_vector_bytes={limits.max_vector_bytes}: at most {most} examples with "
                f"{inputs} inputs"
            )


def check_examples(texts: Sequence[str], labels: Sequence[str], limits: FitLimits) -> Examples:
    """The examples as an :class:`Examples`, or :class:`InvalidExamples` / :class:`TooManyExamples`
    naming the first problem."""
    n = len(texts)
    if n != len(labels):
        raise InvalidExamples(f"{n} texts but {len(labels)} labels")
    if n > limits.max_examples:
        raise TooManyExamples(f"{n} examples; a fit takes at most fit_max_examples={limits.max_examples}")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise InvalidExamples(
            f"examples {shown_list([str(i) for i in empty], quoted=False)} have an empty text"
        )
    for i, label in enumerate(labels):
        if not label.strip():
            raise InvalidExamples(f"example {i} has an empty label")
        if len(label) > MAX_LABEL_CHARS:
            raise InvalidExamples(
                f"example {i}: label {shown(label, 40)} is over {MAX_LABEL_CHARS} characters"
            )
    counts = Counter(labels)
    if len(counts) < 2:
        only = f" ({shown(next(iter(counts)), 40)})" if counts else ""
        raise InvalidExamples(f"{n} examples with one label{only}: a head needs at least 2 labels")
    if len(counts) > limits.max_labels:
        raise InvalidExamples(
            f"{len(counts)} distinct labels; a fit takes at most fit_max_labels={limits.max_labels}"
        )
    rare = sorted(label for label, k in counts.items() if k < limits.min_per_label)
    if rare:
        raise InvalidExamples(
            f"label(s) {shown_list(rare)} have fewer than {limits.min_per_label} examples: each label needs "
            f"at least {limits.min_per_label} (the folds of the cross-validation)"
        )
    return Examples(tuple(texts), tuple(labels))


def check_head_name(name: str) -> str:
    """A head's name as the heads' folder takes it (:class:`InvalidInput` otherwise)."""
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"bad head name {shown(name)}: must match [a-z0-9][a-z0-9_.-]{{0,63}}")
    return name


def candidate_names(snap: Snapshot) -> list[str]:
    """The inputs a fit chooses from: ``base``, then every loaded and enabled prefix by name."""
    return [BASE_NAME, *sorted(n for n in snap.bank.names if n != BASE_NAME and n in snap.enabled)]


def parse_select(select: str, names: Sequence[str]) -> str | tuple[str, ...]:
    """A rule name (``auto`` as given), or the input names of ``NAME,NAME`` (each one of ``names``:
    ``base`` or a loaded, enabled prefix): :class:`InvalidInput` naming what is wrong."""
    if select in SELECT_CHOICES:
        return select
    chosen = tuple(dict.fromkeys(s.strip() for s in select.split(",") if s.strip()))
    unknown = [n for n in chosen if n not in names]
    if not chosen or unknown:
        problem = f"unknown or disabled: {shown_list(unknown)}" if unknown else "no name given"
        raise InvalidInput(
            f"select {shown(select)}: expected one of {', '.join(SELECT_CHOICES)} or comma-separated input "
            f"names; {problem} (inputs: {shown_list(list(names), quoted=False)})"
        )
    return chosen


@dataclass(frozen=True)
class FitTask:
    """What to fit: the head's name, its examples, the input rule and the seed."""

    name: str
    examples: Examples
    select: str = "auto"
    seed: int = 0
    description: str | None = None
