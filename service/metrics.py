"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (two apps in one process never clash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        self.forward_calls = Counter("prefix_embed_forward_calls", "Model forward calls.", registry=r)
        self.batch_rows = Counter(
            "prefix_embed_batch_rows", "Rows computed by forward calls (texts x prefixes).", registry=r
        )
        self.batch_tokens = Counter(
            "prefix_embed_batch_tokens", "Padded tokens of forward calls, prefix slots included.", registry=r
        )
        self.forward_seconds = Histogram(
            "prefix_embed_forward_duration_seconds",
            "Duration of one forward call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.embeddings = Counter(
            "prefix_embed_embeddings", "Vectors returned (texts x prefixes) by route.", ["route"], registry=r
        )
        self.queue_depth = Gauge(
            "prefix_embed_queue_depth", "Requests waiting or running in the batcher.", registry=r
        )
        self.prefixes_loaded = Gauge(
            "prefix_embed_prefixes_loaded", "Prefixes in the served bank.", registry=r
        )
        self.prefixes_enabled = Gauge("prefix_embed_prefixes_enabled", "Enabled prefixes.", registry=r)
        self.prefixes_rejected = Gauge(
            "prefix_embed_prefixes_rejected", "Prefix folder entries rejected as invalid.", registry=r
        )
        self.ready = Gauge("prefix_embed_ready", "1 once the model is loaded and warmed up.", registry=r)

    def observe_forward(self, rows: int, tokens: int, seconds: float) -> None:
        """A ``TorchEncoder.on_forward`` observer."""
        self.forward_calls.inc()
        self.batch_rows.inc(rows)
        self.batch_tokens.inc(tokens)
        self.forward_seconds.observe(seconds)

    def hook_encoder(self, encoder: Any) -> None:
        """Observe the encoder's forward calls, keeping an observer someone else installed."""
        if not hasattr(encoder, "on_forward"):
            return
        previous: Callable[[int, int, float], None] | None = encoder.on_forward

        def observe(rows: int, tokens: int, seconds: float) -> None:
            self.observe_forward(rows, tokens, seconds)
            if previous is not None:
                previous(rows, tokens, seconds)

        encoder.on_forward = observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
