"""Typed dependencies: routes read ``app.state`` only through these.

All of them are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, which cost
every request one thread round trip per dependency (profiled at 1 text/request, BENCHMARKS.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.metrics import Metrics
from service.runtime import Runtime, Serving


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_metrics(runtime: RuntimeDep) -> Metrics:
    return runtime.metrics


async def get_serving(runtime: RuntimeDep) -> Serving:
    """Encoder, registry and batcher; 503 ``not_ready`` until the model is loaded and warmed up."""
    return runtime.serving()


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServingDep = Annotated[Serving, Depends(get_serving)]
