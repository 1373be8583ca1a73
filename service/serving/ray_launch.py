"""``python -m service ray-serve``: run the service on Ray Serve, on a local Ray instance started here
or on the cluster named by ``RAY_ADDRESS``, until SIGINT/SIGTERM; then drain and stop.

The service's own flags (``--prefix-dir``, ``--device``, ``--host``, ``--port``, ...) are generated from
:class:`service.config.Settings` by :mod:`service.settings_cli`, the same generator as ``serve``'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Annotated, Any

import typer

from service.config import Settings

log = logging.getLogger(__name__)
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"


def run(settings: Settings, scaling: Any, address: str | None = None) -> int:
    """Start (or join) Ray, deploy, serve until SIGINT/SIGTERM, drain, stop. Returns the exit status."""
    import ray
    from ray import serve

    from service.procs import free_port
    from service.serving.ray_app import APP_NAME, build_application
    from service.serving.ray_proxy import CALLBACK_PATH

    address = address or os.environ.get("RAY_ADDRESS") or None
    port = settings.port or free_port(settings.host)
    os.environ.setdefault(PROXY_CALLBACK_ENV, CALLBACK_PATH)  # inherited by a local Ray's proxy
    started = time.monotonic()
    if address is None:
        most = scaling.autoscale[1] if scaling.autoscale else scaling.replicas
        cpus = max(os.cpu_count() or 1, math.ceil(most * scaling.replica_cpus))
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=settings.log_level == "debug")
    else:
        ray.init(address=address, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": settings.host, "port": port}, proxy_location="HeadOnly")
        serve.run(build_application(settings, scaling), name=APP_NAME, route_prefix="/", blocking=False)
        # serve.run returns once every replica has loaded and warmed up its model
        n = scaling.autoscale[0] if scaling.autoscale else scaling.replicas
        print(
            f"ray-serve ready: {n} replica(s) on http://{settings.host}:{port} "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        stop.wait()
        print("ray-serve: stopping (in-flight requests finish first)", flush=True)
    except Exception as exc:
        log.exception("ray-serve failed")
        print(f"error: ray-serve failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Delete the application first, with the proxy still up: each replica stops taking requests,
        # finishes its in-flight ones (graceful_shutdown_timeout_s) and their responses still reach
        # the clients. Then stop Serve and Ray, when they were started here.
        with contextlib.suppress(Exception):
            serve.delete(APP_NAME)
        if address is None:
            serve.shutdown()
            ray.shutdown()
    print("ray-serve: stopped", flush=True)
    return 0


def main(
    settings: Settings,
    *,
    replicas: int,
    autoscale: str | None,
    replica_cpus: float,
    replica_gpus: float,
    max_ongoing_requests: int,
) -> int:
    """``ray-serve`` (flags parsed by :mod:`service.settings_cli`, the same as ``serve``'s): check
    the Ray side, then :func:`run`."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print('error: ray-serve needs Ray Serve: pip install "prefix-embed[ray]"', file=sys.stderr)
        return 2
    from service.serving.ray_app import Scaling

    try:
        bounds = Scaling.parse_autoscale(autoscale) if autoscale else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scaling = Scaling(
        replicas=replicas,
        autoscale=bounds,
        replica_cpus=replica_cpus,
        replica_gpus=replica_gpus,
        max_ongoing_requests=max_ongoing_requests,
    )
    return run(settings, scaling)


def ray_serve_cmd(
    settings: Settings,
    replicas: Annotated[int, typer.Option(min=1, help="Fixed number of replicas.")] = 1,
    autoscale: Annotated[
        str | None, typer.Option(help="MIN:MAX replicas, autoscaled on ongoing requests.")
    ] = None,
    replica_cpus: Annotated[float, typer.Option(min=0, help="CPUs Ray reserves per replica.")] = 1.0,
    replica_gpus: Annotated[float, typer.Option(min=0, help="GPUs Ray reserves per replica.")] = 0.0,
    max_ongoing_requests: Annotated[
        int, typer.Option(min=1, help="Requests in flight per replica (the batcher batches them).")
    ] = 64,
) -> None:
    """Serve on Ray Serve (needs the `ray` extra): replicas behind Ray's proxy on --host/--port, on a
    local Ray or RAY_ADDRESS, until SIGINT/SIGTERM. Every other flag is serve's (every Settings field)."""
    raise typer.Exit(
        main(
            settings,
            replicas=replicas,
            autoscale=autoscale,
            replica_cpus=replica_cpus,
            replica_gpus=replica_gpus,
            max_ongoing_requests=max_ongoing_requests,
        )
    )
