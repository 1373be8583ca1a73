"""The one embedding pipeline: (texts, requested names or a served model, options) -> the vectors, the
prefixes that made them (with digests) and the usage.

Every route and command that embeds goes through it: ``POST /embed``, ``POST /v1/embeddings``,
``POST /predict`` and ``python -m service embed``. The routes only parse, call it and render. Names
are resolved to bank slots once per request (:class:`Selection`), against one registry snapshot, and
the batch runs on that snapshot's bank to its end, so a hot swap never mixes versions in a response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.cache import VectorCache, keys_for, variant_key
from service.engine.bank import PrefixBank
from service.engine.calibration import Calibration, applicable, pooling_id
from service.engine.direct import token_limit
from service.engine.prefix import BASE_NAME, LoadedPrefix
from service.errors import (
    ModelUnavailable,
    NoActivePrefixes,
    PrefixDisabled,
    PrefixNotFound,
    shown,
    shown_list,
)
from service.registry.served import ServedModel, unavailable_reason

if TYPE_CHECKING:
    from service.batching import Batcher
    from service.config import Settings
    from service.metrics import Metrics
    from service.registry.registry import PrefixRegistry, Snapshot


@dataclass(frozen=True)
class Selection:
    """Prefixes of one bank snapshot, in output order, resolved to their slots once."""

    bank: PrefixBank
    prefixes: tuple[LoadedPrefix, ...]
    slots: tuple[int, ...]

    @classmethod
    def of(cls, bank: PrefixBank, names: Sequence[str]) -> Selection:
        slots = tuple(bank.indices(names))  # unknown names -> PrefixNotFound, listing the known ones
        return cls(bank, tuple(bank.prefixes[s] for s in slots), slots)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.prefixes]


@dataclass(frozen=True)
class Embedded:
    """Vectors of every text under every selected prefix: float32 [B, P, dim], unnormalized; per
    prefix, the calibration that applies to them (None: the quantized encodings' fallback)."""

    selection: Selection
    vectors: np.ndarray
    prompt_tokens: int
    calibrations: tuple[Calibration | None, ...]

    @property
    def prefixes(self) -> tuple[LoadedPrefix, ...]:
        return self.selection.prefixes


class EmbeddingPipeline:
    """Chooses prefixes (a request's names, a served model, or the default), then embeds through the
    batcher. ``served_name``: the name the service reports as ``model``; on ``/v1/embeddings`` it
    stands for the default model."""

    def __init__(
        self,
        registry: PrefixRegistry,
        batcher: Batcher,
        *,
        served_name: str,
        default_prefixes: str = "model",
        include_base: bool = True,
        metrics: Metrics | None = None,
        cache_bytes: int = 0,
        pooling: str = "mean",
    ) -> None:
        """``pooling``: the vectors' pooling id (``engine.calibration.pooling_id``), part of the cache
        key and what a calibration must have measured to apply."""
        self.registry = registry
        self.batcher = batcher
        self.served_name = served_name
        self.default_prefixes = default_prefixes
        self.include_base = include_base
        self.metrics = metrics
        self.dim = batcher.encoder.dim
        self.pooling = pooling  # part of the cache key
        self.cache = VectorCache(cache_bytes, on_change=self._cache_event if metrics is not None else None)

    @classmethod
    def from_settings(
        cls, registry: PrefixRegistry, batcher: Batcher, settings: Settings, metrics: Metrics | None = None
    ) -> EmbeddingPipeline:
        return cls(
            registry,
            batcher,
            served_name=settings.model_name(),
            default_prefixes=settings.default_prefixes,
            include_base=settings.include_base,
            metrics=metrics,
            cache_bytes=settings.vector_cache_bytes,
            pooling=pooling_id(settings.pooling, settings.pooling_layers),
        )

    def snapshot(self) -> Snapshot:
        """The registry's current snapshot: take it once per request."""
        return self.registry.snapshot

    # --- choosing prefixes ----------------------------------------------------------------------

    def select(self, snap: Snapshot, requested: Sequence[str] | None) -> Selection:
        """``requested`` in its order (each loaded and enabled; ``base`` always may be asked for), or
        the default set when None."""
        if requested is None:
            return Selection.of(snap.bank, self.default_names(snap))
        selection = Selection.of(snap.bank, requested)
        disabled = [n for n in requested if n not in snap.enabled]
        if disabled:
            raise PrefixDisabled(
                f"prefix(es) {shown_list(disabled)} are disabled; enable with PATCH /prefixes"
            )
        return selection

    def select_model(self, snap: Snapshot, model: str) -> Selection:
        """``/v1/embeddings``' ``model``: a served model of models.json, the served name (the default
        model), or one prefix's name (that prefix's vector; ``base``: the backbone's own)."""
        configured = snap.served.models.get(model)
        if configured is not None:
            return Selection.of(snap.bank, self._model_names(snap, configured))
        if model == self.served_name:
            return Selection.of(snap.bank, self.default_names(snap))
        if model in snap.bank.names:
            return self.select(snap, [model])
        models = [
            *snap.served.models,
            *([] if self.served_name in snap.served.models else [self.served_name]),
        ]
        raise PrefixNotFound(
            f"model {shown(model)} not found: use a served model ({shown_list(models)}) or a prefix name "
            f"({shown_list(snap.bank.names)}); GET /v1/models lists them"
        )

    def default_names(self, snap: Snapshot) -> list[str]:
        """What "the default" means: the default served model (fixed by models.json; ``base`` alone
        without one), or with ``default_prefixes=enabled`` every enabled prefix."""
        if self.default_prefixes == "enabled":
            names = [
                n for n in snap.bank.names if n in snap.enabled and (self.include_base or n != BASE_NAME)
            ]
            if not names:
                raise NoActivePrefixes(
                    "no prefix is enabled; enable one with PATCH /prefixes or add a prefix file"
                )
            return names
        served = snap.served
        if served.error is not None:
            raise ModelUnavailable(f"the default model is unavailable: {served.error}")
        if served.default is None:
            return [BASE_NAME]
        return self._model_names(snap, served.models[served.default])

    def _model_names(self, snap: Snapshot, model: ServedModel) -> list[str]:
        reason = unavailable_reason(model, snap.bank, snap.enabled, self.dim)
        if reason is not None:
            raise ModelUnavailable(
                f"{reason}; restore those prefixes, or change the model in models.json "
                "(python -m service models pin)"
            )
        return model.names

    # --- embedding -----------------------------------------------------------------------------

    async def embed(
        self, texts: Sequence[str], selection: Selection, *, truncate: bool = True, route: str | None = None
    ) -> Embedded:
        """Every text under every selected prefix. Cached (text, prefix) pairs are not computed again;
        the rest run through the batcher, all missing prefixes of a text in one pass (a text's calls
        share its trunk). ``route`` labels the embeddings metric."""
        if self.cache.enabled:
            vectors, tokens = await self._embed_cached(texts, selection, truncate)
        else:
            out = await self.batcher.embed(texts, selection.bank, selection.slots, truncate=truncate)
            vectors, tokens = out.vectors, out.prompt_tokens
        if self.metrics is not None and route is not None:
            self.metrics.embeddings.labels(route).inc(len(texts) * len(selection.slots))
        calibrations = tuple(applicable(p, self.pooling) for p in selection.prefixes)
        return Embedded(selection, vectors, tokens, calibrations)

    async def _embed_cached(
        self, texts: Sequence[str], selection: Selection, truncate: bool
    ) -> tuple[np.ndarray, int]:
        bank, slots = selection.bank, selection.slots
        # The whole request's token limit, also for a part of its slots: a vector never depends on
        # which of its neighbours happened to be cached.
        limit = token_limit(self.batcher.encoder, bank, slots)
        keys = keys_for(
            texts, [p.digest for p in selection.prefixes], variant_key(self.pooling, truncate, limit)
        )
        vectors = np.empty((len(texts), len(slots), self.dim), dtype=np.float32)
        tokens = [0] * len(texts)
        # missing columns -> {text: the request's indices of that text}: each distinct text once
        todo: dict[tuple[int, ...], dict[str, list[int]]] = {}
        for b, row in enumerate(keys):
            missing = []
            for p, key in enumerate(row):
                hit = self.cache.get(key)
                if hit is None:
                    missing.append(p)
                else:
                    vectors[b, p] = hit.vector
                    tokens[b] = hit.tokens
            if missing:
                todo.setdefault(tuple(missing), {}).setdefault(texts[b], []).append(b)
        groups = list(todo.items())
        outs = await asyncio.gather(
            *(
                self.batcher.embed(
                    list(where), bank, [slots[c] for c in cols], truncate=truncate, token_limit=limit
                )
                for cols, where in groups
            )
        )
        for (cols, where), out in zip(groups, outs, strict=True):
            for j, rows in enumerate(where.values()):
                for b in rows:
                    vectors[b, list(cols)] = out.vectors[j]
                    tokens[b] = out.token_counts[j]
                for k, c in enumerate(cols):
                    self.cache.put(keys[rows[0]][c], out.vectors[j, k], out.token_counts[j])
        self._cache_gauges()
        return vectors, sum(tokens)

    def _cache_event(self, event: str, n: int) -> None:
        assert self.metrics is not None
        self.metrics.cache_events.labels(event).inc(n)

    def _cache_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.cache_bytes.set(self.cache.bytes)
            self.metrics.cache_entries.set(len(self.cache))
