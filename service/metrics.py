"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (two apps in one process never clash).

HTTP requests, vectors and predictions returned, prefixes, heads and readiness are here; the batcher adds its own
(forward calls, batch rows and tokens, queue depth and time) to the same registry at start-up.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric the service exports. Gauges read live values through callbacks set at start-up."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "prefix_embed_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "prefix_embed_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.embeddings = Counter(
            "prefix_embed_embeddings", "Vectors returned (texts x prefixes) by route.", ["route"], registry=r
        )
        self.predictions = Counter(
            "prefix_embed_predictions", "Predictions returned (texts) by task head.", ["task"], registry=r
        )
        self.prefixes_loaded = Gauge(
            "prefix_embed_prefixes_loaded", "Prefixes in the served bank.", registry=r
        )
        self.prefixes_enabled = Gauge("prefix_embed_prefixes_enabled", "Enabled prefixes.", registry=r)
        self.prefixes_rejected = Gauge(
            "prefix_embed_prefixes_rejected", "Prefix folder entries rejected as invalid.", registry=r
        )
        self.heads_loaded = Gauge("prefix_embed_heads_loaded", "Task heads loaded.", registry=r)
        self.heads_available = Gauge(
            "prefix_embed_heads_available", "Task heads enabled and available (inputs as fitted).", registry=r
        )
        self.ready = Gauge("prefix_embed_ready", "1 once the model is loaded and warmed up.", registry=r)
        self.cache_events = Counter(
            "prefix_embed_vector_cache",
            "Vector cache lookups and evictions by event (hit, miss: one (text, prefix) pair each; eviction).",
            ["event"],
            registry=r,
        )
        self.cache_bytes = Gauge(
            "prefix_embed_vector_cache_bytes", "Bytes held by the vector cache.", registry=r
        )
        self.cache_entries = Gauge(
            "prefix_embed_vector_cache_entries",
            "(text, prefix) vectors held by the vector cache.",
            registry=r,
        )
        # Counted by the HTTP protocol of `serve` (service/connections.py); they stay 0 under Ray.
        self.open_connections = Gauge("prefix_embed_open_connections", "Open client connections.", registry=r)
        self.connections_refused = Counter(
            "prefix_embed_connections_refused",
            "Connections refused with 503 at the max_connections cap.",
            registry=r,
        )
        self.requests_timed_out = Counter(
            "prefix_embed_requests_timed_out",
            "Requests closed with 408: headers or body not received within client_timeout_s.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
