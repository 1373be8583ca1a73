"""The service as a Ray Serve deployment: the same FastAPI app (``create_app``), one per replica.

Each replica builds its own app in the replica process (``__serve_build_asgi_app__``), so it loads
its own model, batcher and prefix registry; the replicas share only the prefix folder (and through
it the state file), each one kept in step by its own watcher. Ray's proxy routes the HTTP API
unchanged; every response names the replica that answered in the header ``x-replica-id``, and
``GET /info`` names it under ``replica``.

Deploy from Python (``build_application`` -> ``serve.run``; ``python -m service ray-serve`` does
this) or from a Serve config file (``import_path: service.serving.ray_app:app_builder``, see
``deploy/serve-config.yaml``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.config import AutoscalingConfig
from ray.serve.deployment import Application, Deployment
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from service.runtime import Runtime
from service.serving import REPLICA_HEADER

APP_NAME = "prefix-embed"
DEPLOYMENT_NAME = "PrefixEmbed"


@dataclass(frozen=True)
class Scaling:
    """How many replicas: a fixed number, or autoscaling between ``min_replicas`` and ``max_replicas``."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    max_ongoing_requests: int = 64  # per replica; the batcher wants concurrent requests to batch
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    target_ongoing_requests: int = 16  # autoscaling: in-flight requests per replica to aim for

    @staticmethod
    def parse_autoscale(text: str) -> tuple[int, int]:
        """``"MIN:MAX"`` -> (MIN, MAX), 0 <= MIN <= MAX, MAX >= 1."""
        lo, sep, hi = text.partition(":")
        if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
            raise ValueError(f"--autoscale takes MIN:MAX (two whole numbers), not {text!r}")
        low, high = int(lo), int(hi)
        if high < 1 or low > high:
            raise ValueError(f"--autoscale {text}: needs 0 <= MIN <= MAX and MAX >= 1")
        return low, high

    def deployment_options(self, settings: Settings) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            # SIGTERM / serve.shutdown: a replica finishes its in-flight requests first (up to their deadline)
            "graceful_shutdown_timeout_s": settings.request_timeout_s + 1,
            "ray_actor_options": {"num_cpus": self.replica_cpus, "num_gpus": self.replica_gpus},
        }
        if self.autoscale is not None:
            low, high = self.autoscale
            options["autoscaling_config"] = AutoscalingConfig(
                min_replicas=low,
                max_replicas=high,
                initial_replicas=max(low, 1),
                # requests in flight per replica that Serve aims for (the batcher wants several)
                target_ongoing_requests=self.target_ongoing_requests,
            )
        else:
            options["num_replicas"] = self.replicas
        return options


class ReplicaHeader:
    """Pure ASGI middleware: ``x-replica-id`` on every HTTP response of this replica."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, with_header)


def _replica_id() -> str:
    return str(serve.get_replica_context().replica_id.unique_id)


def _wait_ready_on_startup(app: FastAPI, runtime: Runtime) -> None:
    """Make the app's start-up (which Ray awaits before routing to the replica) last until the model
    is loaded and warmed up, or fail with the load error (Ray then retries the replica)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            while not runtime.ready:
                if runtime.load_error is not None:
                    raise RuntimeError(f"replica start-up failed: {runtime.load_error}")
                await asyncio.sleep(0.05)
            yield state

    app.router.lifespan_context = lifespan


class PrefixEmbedReplica:
    """One replica: its own ``create_app`` (model, batcher, registry, watcher) behind Ray's proxy."""

    def __init__(self, settings: Settings | Mapping[str, Any] | None = None) -> None:
        # A Serve config file passes plain values; anything not given comes from PREFIX_EMBED_* variables.
        self.settings = settings if isinstance(settings, Settings) else Settings(**dict(settings or {}))
        self.replica_id = _replica_id()
        self.web: FastAPI | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        app = create_app(self.settings)
        runtime: Runtime = app.state.runtime
        runtime.replica_id = self.replica_id
        app.add_middleware(ReplicaHeader, replica_id=self.replica_id)
        _wait_ready_on_startup(app, runtime)
        self.web = app
        return app

    def check_health(self) -> None:
        """Ray's periodic health check: a replica whose model failed to load is replaced."""
        runtime: Runtime | None = self.web.state.runtime if self.web is not None else None
        if runtime is not None and runtime.load_error is not None:
            raise RuntimeError(f"model failed to load: {runtime.load_error}")


# Late-bound ingress: Ray calls __serve_build_asgi_app__ in each replica after __init__.
PrefixEmbedDeployment = serve.deployment(name=DEPLOYMENT_NAME)(serve.ingress()(PrefixEmbedReplica))


def build_deployment(settings: Settings, scaling: Scaling) -> Deployment:
    """The deployment with ``scaling``'s options, as Ray validated them (read its public properties:
    ``num_replicas``, ``max_ongoing_requests``, ``ray_actor_options``)."""
    return PrefixEmbedDeployment.options(**scaling.deployment_options(settings))


def build_application(settings: Settings, scaling: Scaling) -> Application:
    """The Serve application for ``serve.run`` (used by ``python -m service ray-serve``): every replica
    is built from ``settings``."""
    return build_deployment(settings, scaling).bind(settings)


def app_builder(args: dict[str, Any]) -> Application:
    """``import_path`` of a Serve config file: ``args`` are Settings fields (``prefix_dir``, ``device``, ...);
    replicas, autoscaling and resources are the config file's ``deployments`` entries."""
    Settings(**args)  # fail at deploy time, on the driver, for a bad value
    return PrefixEmbedDeployment.bind(dict(args))
