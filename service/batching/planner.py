"""Choose the next forward batch from the waiting requests, under a token budget.

Cost of a batch = rows x padded length, where rows = texts x prefixes run and the padded length is
the longest text plus the bank's (padded) prefix length: what the model really computes.
Selection is FIFO so the oldest request always advances; inside the batch, texts are sorted by
length so that the encoder's row chunks (CPU) are padded only to their own longest text.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from service.batching.request import EmbedJob
from service.engine.bank import PrefixBank
from service.engine.encoder import TokenizedBatch

SlotPolicy = Literal["group", "union"]


@dataclass
class PlannedBatch:
    """Texts of one or more requests that run as ONE encoder call, under one bank snapshot."""

    bank: PrefixBank
    slots: tuple[int, ...]  # the slots run for every text of the batch
    items: list[tuple[EmbedJob, int]] = field(default_factory=list)  # (request, text index)

    @property
    def requests(self) -> list[EmbedJob]:
        return list({id(r): r for r, _ in self.items}.values())

    @property
    def rows(self) -> int:
        return len(self.items) * len(self.slots)

    def real_tokens(self) -> int:
        """Tokens that carry information: each row's text plus its own prefix length."""
        prefix = sum(int(self.bank.lengths[s]) for s in self.slots)
        return sum(len(r.token_ids[i]) for r, i in self.items) * len(self.slots) + prefix * len(self.items)

    def sort_by_length(self) -> None:
        self.items.sort(key=lambda it: len(it[0].token_ids[it[1]]))

    def tokenized(self, pad_token_id: int) -> TokenizedBatch:
        """Right-padded ids of the batch's texts, in ``items`` order."""
        lengths = tuple(len(r.token_ids[i]) for r, i in self.items)
        ids = np.full((len(lengths), max(lengths, default=0)), pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, (r, i) in enumerate(self.items):
            n = lengths[row]
            ids[row, :n] = r.token_ids[i]
            mask[row, :n] = 1
        return TokenizedBatch(ids, mask, lengths)


def batch_key(req: EmbedJob, policy: SlotPolicy) -> Hashable:
    """Requests that may share a forward call: same bank snapshot (and same slots under ``group``)."""
    return req.bank.version if policy == "union" else (req.bank.version, req.slots)


def plan_batch(queue: Sequence[EmbedJob], *, max_tokens: int, policy: SlotPolicy) -> PlannedBatch | None:
    """The next batch: texts of the requests sharing the oldest request's key, in arrival order,
    until one more text would exceed ``max_tokens``. At least one text is always taken (a single
    text over the budget still has to run). Advances ``next_text`` of every request it takes from.
    """
    head = next((r for r in queue if r.live and r.next_text < r.size), None)
    if head is None:
        return None
    key = batch_key(head, policy)
    prefix_pad = int(head.bank.keys.shape[3]) if len(head.bank) else 0
    slots: set[int] = set(head.slots)
    items: list[tuple[EmbedJob, int]] = []
    longest = 0
    for req in queue:
        if not req.live or req.next_text >= req.size or batch_key(req, policy) != key:
            continue
        union = slots | set(req.slots)
        while req.next_text < req.size:
            n = len(req.token_ids[req.next_text])
            cost = (len(items) + 1) * len(union) * (max(longest, n) + prefix_pad)
            if items and cost > max_tokens:
                return _finish(head, slots, items, policy)
            items.append((req, req.next_text))
            req.next_text += 1
            longest = max(longest, n)
            slots = union
    return _finish(head, slots, items, policy)


def _finish(
    head: EmbedJob, slots: set[int], items: list[tuple[EmbedJob, int]], policy: SlotPolicy
) -> PlannedBatch:
    # Under `group` every request has the head's slots, in its order (duplicates included).
    order = head.slots if policy == "group" else tuple(sorted(slots))
    batch = PlannedBatch(head.bank, order, items)
    batch.sort_by_length()
    return batch
