"""The embedding pipeline without a server: ``python -m service embed`` (and ``predict``) run the
routes' exact code path (registry scan, batcher, :class:`~service.pipeline.EmbeddingPipeline`) once,
so a command prints what the server would return."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.backend import build_encoder
from service.batching import Batcher
from service.config import Settings
from service.engine.encoder import CallLoop
from service.pipeline import EmbeddingPipeline
from service.registry.loader import Rejected
from service.registry.registry import PrefixRegistry
from service.runtime import BACKGROUND_WORK_WAIT_S, warm_up

T = TypeVar("T")


def run_pipeline(
    settings: Settings,
    work: Callable[[EmbeddingPipeline], Awaitable[T]],
    *,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> T:
    """Load the encoder and the prefix folder as ``serve`` does, then ``await work(pipeline)``."""
    encoder = build_encoder(settings)
    registry = PrefixRegistry.from_settings(settings, encoder.spec)
    snap = registry.scan()
    for rejected in (*snap.rejected, *snap.heads.rejected):
        if on_rejected is not None:
            on_rejected(rejected)
    # As serve does before /ready: every depth the folder needs is set up (ONNX: exported, which can
    # take longer than a request's deadline on a first run) before the first request is queued.
    warm_up(encoder, snap.bank)

    async def main() -> T:
        batcher = Batcher.from_settings(encoder, settings)
        await batcher.start()
        try:
            return await work(EmbeddingPipeline.from_settings(registry, batcher, settings))
        finally:
            await batcher.stop()
            # a lone-call session opened in the background by a one-text call must land before the
            # interpreter exits, or ONNX Runtime aborts the process (exit -6) after the output
            if isinstance(encoder, CallLoop):
                await asyncio.to_thread(encoder.wait_for_exports, BACKGROUND_WORK_WAIT_S)

    return asyncio.run(main())
