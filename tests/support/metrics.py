"""Read one sample from Prometheus text exposition (``/metrics``), parsed by ``prometheus_client``."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of sample ``name`` (e.g. ``prefix_embed_forward_calls_total``) whose labels include
    ``labels``; AssertionError when none or several samples match."""
    want = dict(labels or {})
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and want.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{len(found)} samples of {name} with labels {want} in /metrics"
    return float(found[0])


def scrape(client: httpx.Client, name: str, **labels: str) -> float:
    """:func:`metric_value` of ``name`` (with ``labels``) in ``GET /metrics`` of ``client``'s server
    (an ``httpx.Client`` with its base URL, or a ``TestClient``)."""
    return metric_value(client.get("/metrics").text, name, labels)
