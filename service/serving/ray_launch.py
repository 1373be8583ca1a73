"""``python -m service ray-serve``: run the service on Ray Serve, on a local Ray instance started here
or on the cluster named by ``RAY_ADDRESS``, until SIGINT/SIGTERM; then drain and stop.

The service's own flags (``--prefix-dir``, ``--device``, ``--host``, ``--port``, ...) are the fields of
:class:`service.config.Settings`, parsed generically (``--no-watch`` for booleans), so they stay the
same as ``serve``'s without a second list here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from service.config import Settings
from service.errors import InvalidInput
from service.serving.ray_proxy import CALLBACK_PATH

log = logging.getLogger(__name__)
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
LIST_FIELDS = frozenset(n for n, f in Settings.model_fields.items() if "list" in str(f.annotation))


def settings_from_flags(args: list[str]) -> Settings:
    """``["--prefix-dir", "p", "--no-watch", "--api-key", "k1", "--api-key", "k2"]`` -> Settings.

    Every Settings field is a flag (``--field-name VALUE``, booleans ``--x``/``--no-x``, ``--api-key``
    repeats into ``api_keys``); PREFIX_EMBED_* variables fill the rest, flags win.
    """
    fields = Settings.model_fields
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        if not flag.startswith("--"):
            raise InvalidInput(f"unexpected argument {flag!r}: the service's options are --name VALUE")
        name, eq, inline = flag[2:].partition("=")
        name = name.replace("-", "_")
        if name == "api_key":
            name = "api_keys"
        if name.startswith("no_") and name[3:] in fields and fields[name[3:]].annotation is bool:
            values[name[3:]] = False
            i += 1
            continue
        if name not in fields:
            raise InvalidInput(f"unknown option {flag.split('=')[0]}; the options are the Settings fields")
        if fields[name].annotation is bool and not eq:
            values[name] = True
            i += 1
            continue
        if eq:
            value, i = inline, i + 1
        elif i + 1 < len(args):
            value, i = args[i + 1], i + 2
        else:
            raise InvalidInput(f"option {flag} needs a value")
        if name in LIST_FIELDS:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    return Settings(**values)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run(settings: Settings, scaling: Any, address: str | None = None) -> int:
    """Start (or join) Ray, deploy, serve until SIGINT/SIGTERM, drain, stop. Returns the exit status."""
    import ray
    from ray import serve

    from service.serving.ray_app import APP_NAME, build_application

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


RAY_FLAGS = {"--replica-cpus": float, "--replica-gpus": float, "--max-ongoing-requests": int}


def split_ray_flags(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Ray's own flags (``RAY_FLAGS``) -> Scaling fields; the rest are the service's."""
    ray_opts: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        if flag not in RAY_FLAGS:
            rest.append(args[i])
            i += 1
            continue
        if not eq and i + 1 >= len(args):
            raise InvalidInput(f"option {flag} needs a value")
        value = inline if eq else args[i + 1]
        i += 1 if eq else 2
        try:
            ray_opts[flag[2:].replace("-", "_")] = RAY_FLAGS[flag](value)
        except ValueError:
            raise InvalidInput(f"option {flag}: {value!r} is not a number") from None
    return ray_opts, rest


def main(replicas: int, autoscale: str | None, args: list[str]) -> int:
    """``ray-serve``: split Ray's own flags from the service's, check both, then :func:`run`."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print('error: ray-serve needs Ray Serve: pip install "prefix-embed[ray]"', file=sys.stderr)
        return 2
    from service.serving.ray_app import Scaling

    try:
        ray_opts, rest = split_ray_flags(args)
        settings = settings_from_flags(rest)
        bounds = Scaling.parse_autoscale(autoscale) if autoscale else None
    except (InvalidInput, ValueError) as exc:
        message = exc.message if isinstance(exc, InvalidInput) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(settings, Scaling(replicas=replicas, autoscale=bounds, **ray_opts))
