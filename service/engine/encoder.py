"""The encoder interface shared by the torch and ONNX backends (and the fake used in tests).

The ONE place that decides how a batch becomes model calls: :func:`slot_groups` (which slots share a
call, at which fan-out depth) and :func:`texts_per_call` (how many texts a call takes). The batcher
asks the encoder (``texts_per_call``) and hands it parts that fit, so ``encode`` pads nothing again.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.bank import PrefixBank
from service.engine.forward import layer_rows

# Mixed fan-out depths in one encode: one call per depth (True) or one call at the smallest (False);
# measured in BENCHMARKS.md ("Shared trunk").
GROUP_BY_DEPTH = True


@dataclass(frozen=True)
class TokenizedBatch:
    """Right-padded token ids of B texts. ``lengths[i]`` = real tokens of text i."""

    input_ids: np.ndarray  # int64 [B, T]
    attention_mask: np.ndarray  # int64 [B, T]
    lengths: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def padded_len(self) -> int:
        return int(self.input_ids.shape[1])

    def take(self, rows: Sequence[int]) -> TokenizedBatch:
        """Sub-batch of ``rows``, re-padded to its own longest text."""
        lengths = tuple(self.lengths[r] for r in rows)
        t = max(lengths, default=0)
        idx = np.asarray(rows, dtype=np.int64)
        return TokenizedBatch(self.input_ids[idx, :t], self.attention_mask[idx, :t], lengths)


@dataclass(frozen=True)
class ForwardCall:
    """One model call, as the encoder's observer sees it."""

    texts: int  # B: rows of the trunk (layers below ``fan_out``)
    rows: int  # text x prefix rows of the layers from ``fan_out`` up
    tokens: int  # rows x (padded text length + padded prefix length)
    layer_rows: int  # rows summed over layers (see ``forward.layer_rows``)
    fan_out: int
    seconds: float


ForwardObserver = Callable[[ForwardCall], None]


@dataclass(frozen=True)
class SlotGroup:
    """Slots that run in one model call, fanning out from the trunk at layer ``fan_out``."""

    fan_out: int
    columns: tuple[int, ...]  # positions in the requested ``slots``
    slots: tuple[int, ...]  # bank slots, ``slots[i]`` = requested ``slots[columns[i]]``


def slot_depth(bank: PrefixBank, slot: int, max_depth: int) -> int:
    """Deepest fan-out a slot allows: its first_layer capped at ``max_depth`` (at most L - 1), but 0
    for a position shift (the shift changes layer 0's input, so the text's trunk would differ)."""
    if int(bank.shifts[slot]):
        return 0
    return min(int(bank.firsts[slot]), max_depth)


def call_depth(bank: PrefixBank, slots: Sequence[int], max_depth: int) -> int:
    """The fan-out depth of one call over ``slots``: the smallest depth among them."""
    return min((slot_depth(bank, s, max_depth) for s in slots), default=0)


def slot_groups(bank: PrefixBank, slots: Sequence[int], max_depth: int, by_depth: bool) -> list[SlotGroup]:
    """The model calls of one encode: all slots at their smallest depth (``by_depth`` False), or one
    call per depth (each call's trunk as deep as its own prefixes allow), where a deeper group joins
    the next shallower call whenever that computes no more layer rows: n slots moved from depth d2
    down to d1 cost (d2 - d1) x n extra rows per text and save the d2 rows of their own trunk. So
    ``base`` (which acts in no layer) and other single deep prefixes ride along in an existing call.
    ``max_depth``: L - 1, or less where a backend has fewer depths."""
    if not slots:
        return []
    depths = [slot_depth(bank, s, max_depth) for s in slots]
    keys = sorted(set(depths)) if by_depth else [min(depths)]
    calls: list[tuple[int, list[int]]] = [
        (depth, [i for i, d in enumerate(depths) if d == depth or not by_depth]) for depth in keys
    ]
    for i in range(len(calls) - 1, 0, -1):
        (d1, c1), (d2, c2) = calls[i - 1], calls[i]
        if (d2 - d1) * len(c2) <= d2:
            calls[i - 1] = (d1, sorted(c1 + c2))
            del calls[i]
    return [SlotGroup(depth, tuple(cols), tuple(slots[i] for i in cols)) for depth, cols in calls]


def fold_groups(groups: Sequence[SlotGroup], usable: Callable[[int], int]) -> list[SlotGroup]:
    """``groups`` run at the depth ``usable`` gives for each (a backend may not have a depth yet: the
    ONNX backend serves a depth that is still exporting in the deepest exported call at or below it,
    which is exact because a prefix's slots are masked below its own first layer). Groups that land
    on the same depth become one call."""
    merged: dict[int, list[tuple[int, int]]] = {}
    for g in groups:
        merged.setdefault(usable(g.fan_out), []).extend(zip(g.columns, g.slots, strict=True))
    return [
        SlotGroup(depth, tuple(c for c, _ in pairs), tuple(s for _, s in pairs))
        for depth, pairs in ((d, sorted(merged[d])) for d in sorted(merged))
    ]


def texts_per_call(
    chunk_rows: int, n_texts: int, n_prefixes: int, fan_out: int = 0, num_layers: int = 1
) -> int:
    """Texts per model call under a row budget (0 = one call for the whole batch).

    The budget is ``chunk_rows`` rows per layer on average: a call costs ``layer_rows`` = fan_out rows
    of trunk per text plus (layers - fan_out) x prefixes rows above it, so a trunk lets more texts
    share a call. All prefixes of one text always share a call, so chunks split between texts.
    """
    if not chunk_rows:
        return max(1, n_texts)
    per_text = layer_rows(num_layers, fan_out, 1, max(1, n_prefixes))
    return max(1, chunk_rows * num_layers // per_text)


class Encoder(Protocol):
    """B texts x P prefixes -> [B, P, dim] pooled vectors, in as few forward calls as allowed."""

    spec: BackboneSpec
    dim: int
    backend: str
    device: str
    dtype: str
    max_input_tokens: int
    providers: list[str] | None  # ONNX Runtime providers in use; None for torch

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch: ...

    def texts_per_call(self, n_texts: int, bank: PrefixBank, slots: Sequence[int]) -> int:
        """How many texts one model call takes (callers split batches there, so that ``encode`` pads
        and runs each part as it is)."""
        ...

    def set_observer(self, observer: ForwardObserver | None) -> None:
        """Called after every model call (one per encoder; None removes it)."""
        ...

    def describe(self) -> dict[str, object]:
        """Backend details for ``/info`` (chunking, grouping, providers, exports)."""
        ...

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        """float32 [B, len(slots), dim]: text b under prefix ``bank.prefixes[slots[p]]``; unnormalized.
        The plain backbone is the built-in ``base`` member's slot."""
        ...


_Job = TypeVar("_Job")


class CallLoop(ABC):
    """What both backends share: the split of a batch into model calls (slot groups x text chunks),
    the observer, and the call count. A backend implements :meth:`_forward` (one model call).

    ``parallel_calls`` > 1 (the ONNX backend on CPU): one ``encode`` runs up to that many model calls
    at once, from a small thread pool, on the same session (ONNX Runtime's ``Run`` is thread-safe).
    Small calls side by side keep the cores busy where one call's operators are too small to split
    well; each call has its share of the CPUs as intra-op threads (BENCHMARKS.md, "Request path")."""

    spec: BackboneSpec
    dim: int
    chunk_rows: int
    parallel_calls: int = 1
    group_by_depth: bool = GROUP_BY_DEPTH
    max_fan_out: int | None = None  # deepest fan-out this backend runs (None: L - 1)

    def __init__(self) -> None:
        self.forward_calls = 0
        self._observer: ForwardObserver | None = None
        self._observer_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def set_observer(self, observer: ForwardObserver | None) -> None:
        self._observer = observer

    def groups(self, bank: PrefixBank, slots: Sequence[int]) -> list[SlotGroup]:
        top = self.spec.num_layers - 1
        cap = top if self.max_fan_out is None else min(top, self.max_fan_out)
        return fold_groups(slot_groups(bank, slots, cap, self.group_by_depth), self.usable_depth)

    def usable_depth(self, depth: int) -> int:
        """The fan-out depth a call that wants ``depth`` runs at now (a backend may lack it yet)."""
        return depth

    def wait_for_exports(self, timeout: float | None = None) -> None:  # noqa: B027 - optional hook
        """Block until the depths a backend is still setting up are ready (nothing to wait for here)."""

    def _texts_per_model_call(self, n_texts: int, bank: PrefixBank, slots: Sequence[int]) -> int:
        layers = self.spec.num_layers
        return min(
            (
                texts_per_call(self.chunk_rows, n_texts, len(g.slots), g.fan_out, layers)
                for g in self.groups(bank, slots)
            ),
            default=max(1, n_texts),
        )

    def texts_per_call(self, n_texts: int, bank: PrefixBank, slots: Sequence[int]) -> int:
        """Texts one ``encode`` takes: ``parallel_calls`` model calls' worth."""
        return self._texts_per_model_call(n_texts, bank, slots) * max(1, self.parallel_calls)

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        out = np.zeros((batch.size, len(slots), self.dim), dtype=np.float32)
        per_call = self._texts_per_model_call(batch.size, bank, slots)
        jobs = [
            (group, first, part)
            for group in self.groups(bank, slots)
            for first, part in _parts(batch, per_call, self.parallel_calls)
        ]
        results = self._map(lambda job, alone: self._timed(job[2], bank, job[0], alone), jobs)
        for (group, first, part), vectors in zip(jobs, results, strict=True):
            out[first : first + part.size, list(group.columns)] = vectors
        return out

    def _map(self, fn: Callable[[_Job, bool], np.ndarray], jobs: Sequence[_Job]) -> list[np.ndarray]:
        """``fn(job, alone)`` over ``jobs``: side by side on the pool when ``parallel_calls`` > 1, else
        in order. ``alone``: no other call of this encoder runs beside it (the batcher runs one encode
        at a time), so a backend may give it every CPU (the adaptive call plan)."""
        if self.parallel_calls <= 1 or len(jobs) <= 1:
            return [fn(job, True) for job in jobs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel_calls, thread_name_prefix="prefix-embed-call")
        return list(self._pool.map(lambda job: fn(job, False), jobs))

    def _timed(
        self, part: TokenizedBatch, bank: PrefixBank, group: SlotGroup, alone: bool = True
    ) -> np.ndarray:
        start = time.perf_counter()
        vectors = self._forward(part, bank, group, alone)
        seconds = time.perf_counter() - start
        with self._observer_lock:  # calls may run side by side (parallel_calls)
            self.forward_calls += 1
            if self._observer is not None:
                rows = part.size * len(group.slots)
                extra = int(bank.keys.shape[3])
                self._observer(
                    ForwardCall(
                        texts=part.size,
                        rows=rows,
                        tokens=rows * (part.padded_len + extra),
                        layer_rows=layer_rows(self.spec.num_layers, group.fan_out, part.size, rows),
                        fan_out=group.fan_out,
                        seconds=seconds,
                    )
                )
        return vectors

    @abstractmethod
    def _forward(self, part: TokenizedBatch, bank: PrefixBank, group: SlotGroup, alone: bool) -> np.ndarray:
        """float32 [texts, len(group.slots), dim]: one model call; rows fan out from the texts at
        ``group.fan_out``. ``alone``: no other call runs beside this one."""

    def describe(self) -> dict[str, object]:
        return {
            "chunk_rows": self.chunk_rows,
            "parallel_calls": self.parallel_calls,
            "group_by_depth": self.group_by_depth,
        }


def part_sizes(n_texts: int, per_call: int, calls: int = 1) -> list[int]:
    """Texts per model call: at most ``per_call`` each; with ``calls`` > 1 side by side, as many parts
    as a multiple of ``calls`` (at most one per text) and near-equal sizes, so that no call is left to
    run alone at the end while the others' CPUs idle (5 texts, 4 per call, 2 calls: 3 + 2, not 4 + 1).
    One text stays one call: it runs alone, with every CPU (the adaptive plan)."""
    n_parts = -(-n_texts // max(1, per_call))
    if calls > 1:
        n_parts = min(n_texts, -(-n_parts // calls) * calls)
    n_parts = max(1, n_parts)
    base, extra = divmod(n_texts, n_parts)
    return [base + (1 if i < extra else 0) for i in range(n_parts)]


def _parts(batch: TokenizedBatch, per_call: int, calls: int = 1) -> list[tuple[int, TokenizedBatch]]:
    """``batch`` in consecutive parts of :func:`part_sizes` (itself, not a re-padded copy, when it fits)."""
    sizes = part_sizes(batch.size, per_call, calls)
    if len(sizes) == 1:
        return [(0, batch)]
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    return [(i, batch.take(range(i, i + n))) for i, n in zip(starts, sizes, strict=True)]
