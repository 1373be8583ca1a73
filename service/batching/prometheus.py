"""Prometheus metrics of the batcher (``prefix_embed_*``), fed by its observer events.

The HTTP layer calls :func:`register_batcher_metrics` once with the registry its ``/metrics``
route serves; nothing is registered at import time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.batching.batcher import Batcher
from service.batching.stats import BatcherObserver, BatchRecord
from service.engine.encoder import ForwardCall

_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PrometheusBatcherMetrics(BatcherObserver):
    """Forward calls, rows and tokens per call, padding, queue and inference time, queue depth."""

    def __init__(self, batcher: Batcher, registry: CollectorRegistry) -> None:
        self.forward_calls = Counter("prefix_embed_forward_calls", "Model forward calls.", registry=registry)
        self.batch_rows_total = Counter(
            "prefix_embed_batch_rows", "Rows (text x prefix pairs) computed.", registry=registry
        )
        self.layer_rows_total = Counter(
            "prefix_embed_layer_rows",
            "Rows computed summed over layers: a shared trunk runs once per text below the fan-out depth, "
            "so this falls below batch_rows x layers when trunk prefixes are served.",
            registry=registry,
        )
        self.forward_rows = Histogram(
            "prefix_embed_forward_rows", "Rows per forward call.", buckets=_ROW_BUCKETS, registry=registry
        )
        self.batch_tokens = Histogram(
            "prefix_embed_batch_tokens",
            "Tokens per forward call: rows x padded length, prefix included.",
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.padding_ratio = Histogram(
            "prefix_embed_padding_ratio",
            "Share of computed positions that were padding, per batch.",
            buckets=_RATIO_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "prefix_embed_queue_seconds",
            "Time from admission to a request's first batch.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "prefix_embed_inference_seconds",
            "Encoder time per batch (all its forward calls).",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_failures = Counter(
            "prefix_embed_batch_failures", "Batches whose encoder call raised.", registry=registry
        )
        self.dropped = Counter(
            "prefix_embed_requests_dropped",
            "Requests that ended without a result, by reason.",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "prefix_embed_queue_depth", "Requests admitted and not yet answered.", registry=registry
        )
        self.queue_depth.set_function(lambda: batcher.queue_depth)

    def on_forward(self, call: ForwardCall) -> None:
        self.forward_calls.inc()
        self.batch_rows_total.inc(call.rows)
        self.layer_rows_total.inc(call.layer_rows)
        self.forward_rows.observe(call.rows)
        self.batch_tokens.observe(call.tokens)

    def on_batch(self, record: BatchRecord) -> None:
        self.padding_ratio.observe(record.padding_ratio)
        self.inference_seconds.observe(record.inference_seconds)

    def on_batch_failed(self, requests: int) -> None:
        self.batch_failures.inc()

    def on_queued(self, seconds: float) -> None:
        self.queue_seconds.observe(seconds)

    def on_dropped(self, reason: str) -> None:
        self.dropped.labels(reason=reason).inc()


def register_batcher_metrics(batcher: Batcher, registry: CollectorRegistry) -> PrometheusBatcherMetrics:
    """Create the batcher's metrics in ``registry`` (the service's own, served at ``/metrics``; never
    the process-global one) and subscribe them."""
    metrics = PrometheusBatcherMetrics(batcher, registry)
    batcher.add_observer(metrics)
    return metrics
