"""Dynamic batcher: queue -> token-budget batches -> one inference worker per encoder.

``Batcher.embed(texts, bank, slots, truncate=...) -> EmbedOutput`` is the whole interface the
HTTP layer needs; :func:`service.batching.prometheus.register_batcher_metrics` exposes its metrics.
"""

from service.batching.batcher import Batcher
from service.batching.planner import SlotPolicy
from service.batching.request import EmbedOutput
from service.batching.stats import BatcherObserver, BatcherStats, BatchRecord

__all__ = ["BatchRecord", "Batcher", "BatcherObserver", "BatcherStats", "EmbedOutput", "SlotPolicy"]
