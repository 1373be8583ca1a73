"""What the batcher reports: per forward call, per batch, per request. Observers subscribe.

:class:`BatcherStats` (plain counters, always on) backs tests and ``GET /info`` (``batching``);
:mod:`service.batching.prometheus` turns the same events into ``prefix_embed_*`` metrics.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from service.engine.encoder import ForwardCall


@dataclass(frozen=True)
class BatchRecord:
    """One encoder call of the batcher (it may be several forward calls when rows are chunked)."""

    requests: int
    texts: int
    rows: int  # texts x prefixes
    forward_calls: int
    padded_tokens: int  # rows x padded length (prefix included), summed over the forward calls
    real_tokens: int  # text tokens plus each row's own prefix length
    queue_seconds: float  # of the oldest request in the batch
    inference_seconds: float

    @property
    def padding_ratio(self) -> float:
        """Share of the computed positions that were padding (0 = none)."""
        if self.padded_tokens <= 0:
            return 0.0
        return max(0.0, 1.0 - self.real_tokens / self.padded_tokens)


class BatcherObserver:
    """Subclass and override what you need. Called from the worker threads: keep it cheap."""

    def on_forward(self, call: ForwardCall) -> None:
        """One model call: texts, rows, padded tokens (prefix slots included), layer rows, seconds."""

    def on_batch(self, record: BatchRecord) -> None:
        """One encoder call finished (successfully or not: see ``on_batch_failed``)."""

    def on_batch_failed(self, requests: int) -> None:
        """An encoder call raised; its ``requests`` were failed."""

    def on_queued(self, seconds: float) -> None:
        """A request left the queue for its first batch after ``seconds``."""

    def on_dropped(self, reason: str) -> None:
        """A request ended without running: ``queue_full`` | ``deadline`` | ``cancelled`` | ``shutdown``."""


@dataclass
class BatcherStats(BatcherObserver):
    """Running totals. Thread-safe: written by the worker threads, read by anyone."""

    forward_calls: int = 0
    forward_rows: int = 0
    forward_tokens: int = 0
    layer_rows: int = 0
    batches: int = 0
    batch_rows: int = 0
    real_tokens: int = 0
    failed_batches: int = 0
    failed_requests: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def on_forward(self, call: ForwardCall) -> None:
        with self._lock:
            self.forward_calls += 1
            self.forward_rows += call.rows
            self.forward_tokens += call.tokens
            self.layer_rows += call.layer_rows

    def on_batch(self, record: BatchRecord) -> None:
        with self._lock:
            self.batches += 1
            self.batch_rows += record.rows
            self.real_tokens += record.real_tokens

    def on_batch_failed(self, requests: int) -> None:
        with self._lock:
            self.failed_batches += 1
            self.failed_requests += requests

    def on_dropped(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def padding_ratio(self) -> float:
        """Over every forward call so far."""
        with self._lock:
            return 0.0 if not self.forward_tokens else max(0.0, 1 - self.real_tokens / self.forward_tokens)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "forward_calls": self.forward_calls,
                "forward_rows": self.forward_rows,
                "forward_tokens": self.forward_tokens,
                "layer_rows": self.layer_rows,
                "batches": self.batches,
                "batch_rows": self.batch_rows,
                "real_tokens": self.real_tokens,
                "failed_batches": self.failed_batches,
                "failed_requests": self.failed_requests,
                "dropped": dict(self.dropped),
            }
