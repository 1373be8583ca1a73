"""What a running service holds (settings, encoder, prefix registry, batcher, watcher, metrics) and
how it starts and stops. ``create_app`` keeps one :class:`Runtime` on ``app.state.runtime``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from service.batching import Batcher
from service.batching.prometheus import register_batcher_metrics
from service.config import Settings
from service.digests import PrefixSets
from service.engine.bank import PrefixBank
from service.engine.encoder import CallLoop, Encoder
from service.engine.prefix import LoadedPrefix
from service.errors import NotReady, PrefixEmbedError
from service.fitting.jobs import FitJobs
from service.metrics import Metrics
from service.pipeline import EmbeddingPipeline
from service.registry.registry import PrefixRegistry
from service.registry.watcher import FolderWatcher

log = logging.getLogger(__name__)

BACKGROUND_WORK_WAIT_S = 60.0  # at shutdown, the most we wait for an export or session in flight


@dataclass(frozen=True)
class Serving:
    """The parts a request needs, all present once the service is ready."""

    encoder: Encoder
    registry: PrefixRegistry
    batcher: Batcher
    pipeline: EmbeddingPipeline


class Runtime:
    """Loads the model in the background so that ``/health`` answers at once and ``/ready`` says when
    requests can be served (after warm-up)."""

    def __init__(self, settings: Settings, encoder: Encoder | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.prefix_sets = PrefixSets()  # sets too long for a response header, for their lookup route
        self.fit_jobs = FitJobs(settings.fit_max_running)  # POST /heads/{name}/fit
        self.encoder = encoder
        self.backend_reason = "an encoder given by the caller" if encoder is not None else "loading"
        self.registry: PrefixRegistry | None = None
        self.batcher: Batcher | None = None
        self.pipeline: EmbeddingPipeline | None = None
        self.watcher: FolderWatcher | None = None
        self.ready = False
        self.load_error: str | None = None
        self.on_fatal: Callable[[], None] | None = None  # set by `serve`: stop the server
        self.replica_id: str | None = None  # set by the Ray Serve deployment (service/serving/ray_app.py)
        self.started_at = time.time()
        self.model_name = settings.model_name()
        m = self.metrics
        m.prefixes_loaded.set_function(lambda: len(self.registry.snapshot.bank) if self.registry else 0)
        m.prefixes_enabled.set_function(lambda: len(self.registry.snapshot.enabled) if self.registry else 0)
        m.prefixes_rejected.set_function(lambda: len(self.registry.snapshot.rejected) if self.registry else 0)
        m.heads_loaded.set_function(lambda: len(self.registry.snapshot.heads.heads) if self.registry else 0)
        m.heads_available.set_function(
            lambda: (
                sum(s.enabled and s.available for s in self.registry.snapshot.heads.heads)
                if self.registry
                else 0
            )
        )
        m.ready.set_function(lambda: float(self.ready))

    def serving(self) -> Serving:
        """The encoder, registry and batcher, or :class:`NotReady` (503) while loading."""
        if (
            not self.ready
            or self.encoder is None
            or self.registry is None
            or self.batcher is None
            or self.pipeline is None
        ):
            reason = f"model failed to load: {self.load_error}" if self.load_error else "model is loading"
            raise NotReady(f"not ready: {reason}; poll GET /ready")
        return Serving(self.encoder, self.registry, self.batcher, self.pipeline)

    async def start(self) -> None:
        """Load, scan the prefix folder, warm up, start the batcher and the watcher; then ready."""
        s = self.settings
        try:
            if self.encoder is None:
                from service.backend import build_encoder_for

                built, choice = await asyncio.to_thread(build_encoder_for, s)
                self.encoder, self.backend_reason = built, choice.reason
            encoder = self.encoder
            registry = PrefixRegistry.from_settings(s, encoder.spec)
            await asyncio.to_thread(registry.load)
            self.registry = registry
            if s.default_prefixes == "model" and not registry.snapshot.served.present:
                log.warning(
                    "no models.json in %s: the default model (`prefixes: null`, model %r) is `base` alone; "
                    "pin a set with `python -m service models pin --prefix-dir %s`, or set "
                    "PREFIX_EMBED_DEFAULT_PREFIXES=enabled for every enabled prefix",
                    s.prefix_dir,
                    self.model_name,
                    s.prefix_dir,
                )
            if s.warmup:
                await asyncio.to_thread(warm_up, encoder, registry.snapshot.bank)
            # Built after warm-up, so its forward-call metrics count served calls only.
            batcher = Batcher.from_settings(encoder, s)
            register_batcher_metrics(batcher, self.metrics.registry)
            await batcher.start()
            self.batcher = batcher
            self.pipeline = EmbeddingPipeline.from_settings(registry, batcher, s, self.metrics)
            if s.watch:
                self.watcher = FolderWatcher(
                    registry, mode=s.watch_mode, poll_ms=s.watch_poll_ms, reconcile_ms=s.watch_reconcile_ms
                )
                self.watcher.start()
        except Exception as exc:
            self.load_error = exc.message if isinstance(exc, PrefixEmbedError) else type(exc).__name__
            log.exception("start-up failed")
            if self.on_fatal is not None:
                self.on_fatal()
            return
        self.ready = True
        snap = registry.snapshot
        log.info(
            "ready: %s (%s) on %s/%s/%s (%s), %d prefixes (%d enabled) from %s",
            self.model_name,
            encoder.spec.fingerprint,
            encoder.backend,
            self.backend_reason,
            encoder.device,
            encoder.dtype,
            len(snap.bank),
            len(snap.enabled),
            s.prefix_dir,
        )

    async def stop(self) -> None:
        self.ready = False
        await self.fit_jobs.close()
        if self.watcher is not None:
            await self.watcher.stop()
        if self.batcher is not None:
            await self.batcher.stop()
        if isinstance(self.encoder, CallLoop):
            # A lone-call session or a depth export still being built in a background thread when the
            # process exits aborts it in ONNX Runtime's C++ ("terminate called without an active
            # exception", exit -6, not 0): let it land first (seconds; bounded).
            await asyncio.to_thread(self.encoder.wait_for_exports, BACKGROUND_WORK_WAIT_S)


def warm_up(encoder: Encoder, bank: PrefixBank | None = None) -> None:
    """Prefixed calls before the first request, so that it does not pay for lazy initialization:
    a probe, then one call per distinct depth among ``bank``'s members (first layer, position
    shift), so that every fan-out depth a request can need is set up (for ONNX: exported) at start.
    A prefix hot-loaded later at a new depth sets its depth up on first use, in the background.
    Two texts: the calls run side by side (the common plan), not alone, so the ONNX backend's
    lone-call sessions (a second copy of the weights) open only when a request runs alone."""
    spec = encoder.spec
    texts = ["warm up the encoder", "and its calls side by side"]
    batch = encoder.tokenize(texts, max_length=encoder.max_input_tokens, truncate=True)
    zeros = torch.zeros(spec.num_layers, spec.num_heads, 1, spec.head_dim)
    probe = LoadedPrefix("warmup", "warmup", zeros, zeros.clone(), "none", "<warm-up>", "native")
    encoder.encode(batch, PrefixBank.build([probe]), [0])
    if bank is None:
        return
    by_depth: dict[tuple[int, bool], int] = {}
    for slot in range(len(bank)):
        by_depth.setdefault((int(bank.firsts[slot]), bool(int(bank.shifts[slot]))), slot)
    for slot in by_depth.values():
        encoder.encode(batch, bank, [slot])
    if isinstance(encoder, CallLoop):
        encoder.wait_for_exports()  # the depths of the prefixes loaded at start, before /ready
