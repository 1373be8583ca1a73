"""``create_app(settings)``: the FastAPI app with its lifespan (load, warm up, watch, batch; stop)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service import __version__
from service.api import embed, fit, heads, openai, ops, predict, prefixes
from service.api.errors import install_error_handlers
from service.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from service.config import Settings
from service.engine.encoder import Encoder
from service.runtime import Runtime
from service.server import install_access_log_redaction


def create_app(settings: Settings, encoder: Encoder | None = None) -> FastAPI:
    """The service app. ``encoder``: use this one instead of loading the configured backbone (tests).

    The model loads in the background after start-up, so ``/health`` answers at once and
    ``/ready`` turns 200 when requests can be served.
    """
    runtime = Runtime(settings, encoder)
    install_access_log_redaction()  # however the app is served: no query values in the access log

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(runtime.start(), name="prefix-embed-start")
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            await runtime.stop()

    app = FastAPI(
        title="prefix-embed",
        version=__version__,
        summary="One frozen encoder, many task prefixes: every prefix's embedding in one forward call.",
        lifespan=lifespan,
        strict_content_type=False,  # a JSON body without a Content-Type header is still JSON
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_prefix_file_bytes,
    )
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)  # outermost: counts 413s too
    for module in (embed, predict, openai, prefixes, heads, fit, ops):
        app.include_router(module.router)
    return app
