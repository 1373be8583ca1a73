"""The image check after podman and the base image are set up (scripts/image_check.sh runs this).

Steps, each asserted (the first failure ends the check with exit status 1):
build the CPU image; the local service's reference vectors; run the image with a bind-mounted copy
of prefixes/ until /ready; the container's vectors equal the local ones (<= 1e-5, same digests);
PATCH, restart, the state persists, and what the container wrote is owned by the host's uid; a file
dropped into the bind mount is hot-loaded; SIGTERM with requests in flight drains them and exits 0
within the grace period; the compose file's CPU profile through podman-compose. Then the measures.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

from scripts.image_check import probes
from scripts.image_check.build import REPO, build_image
from scripts.image_check.compose import check_compose
from scripts.image_check.container import (
    Container,
    check_hot_load,
    check_patch_restart_ownership,
    check_same_vectors,
    check_sigterm_drain,
    copy_prefixes,
)
from scripts.image_check.podman import CheckFailed, Podman, check
from service.procs import free_port
from tests.support.server_process import serve_process, stop_gracefully


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/image_check.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder (copies, logs, caches)")
    parser.add_argument("--base-image", required=True, help="the local base image of the CPU variant")
    parser.add_argument("--tag", default="prefix-embed:cpu", help="the image's tag (compose's too)")
    parser.add_argument("--uid", type=int, default=1000, help="APP_UID: owner of the bind-mounted copy")
    parser.add_argument("--no-compose", action="store_true", help="skip the compose step")
    parser.add_argument("--keep", action="store_true", help="leave the check's container in place")
    return parser.parse_args()


def local_reference(work: Path) -> dict[str, object]:
    """/embed of the local service (this checkout, its venv) on its own copy of the shipped prefixes."""
    folder = work / "local-prefixes"
    copy_prefixes(REPO / "prefixes", folder, uid=0)
    env = {"PREFIX_EMBED_ONNX_CACHE_DIR": str(work / "local-onnx")}
    server = serve_process(work / "logs" / "local-service.log", "--prefix-dir", str(folder), env=env)
    server.start()
    try:
        server.wait_ready(600)
        return probes.embed(server.url)
    finally:
        stop_gracefully(server, 60)


def main() -> int:
    opts = parse_args()
    (opts.work / "logs").mkdir(parents=True, exist_ok=True)
    podman = Podman(opts.work / "logs", commands=[])
    report: dict[str, str] = {}
    mount = opts.work / "prefixes"
    container = Container(podman, opts.tag, "prefix-embed-check", mount, secrets.token_hex(16), free_port())

    def step(title: str, action: Callable[[], dict[str, str] | str]) -> None:
        print(f"\n== {title}", flush=True)
        started = time.monotonic()
        result = action()
        found = result if isinstance(result, dict) else {title: result}
        for key, value in found.items():
            print(f"   {key}: {value}", flush=True)
        report.update(found)
        print(f"   ok ({time.monotonic() - started:.0f} s)", flush=True)

    reference: dict[str, object] = {}
    try:
        step("4. build the CPU image", lambda: build_image(podman, opts.tag, opts.base_image, opts.uid))
        step("5. the local service's vectors", lambda: _remember(reference, local_reference(opts.work)))
        copy_prefixes(REPO / "prefixes", mount, opts.uid)

        def start() -> dict[str, str]:
            seconds = container.start()
            health = podman.run("healthcheck", "run", container.name, check=False)
            check(health.returncode == 0, f"the image's HEALTHCHECK fails: {health.stdout}{health.stderr}")
            exports = [line.split(" ", 3)[-1][:140] for line in container.export_lines()]
            return {
                "cold start to ready": f"{seconds:.1f} s (podman run, ONNX graphs exported)",
                "image HEALTHCHECK": "passes (podman healthcheck run)",
            } | {f"  log {i}": line for i, line in enumerate(exports, 1)}

        step("6. run the image (bind-mounted copy of prefixes/), wait for /ready", start)
        step("7. /embed: container vs local service", lambda: check_same_vectors(container, reference))
        step(
            "8. PATCH, restart, state and file ownership",
            lambda: check_patch_restart_ownership(container, opts.uid),
        )
        step("9. hot-load a file dropped into the bind mount", lambda: check_hot_load(container))
        step("10. SIGTERM with requests in flight", lambda: check_sigterm_drain(container))
        if not opts.no_compose:
            step(
                "11. docker/docker-compose.yml, profile cpu, through podman-compose",
                lambda: check_compose(
                    podman, opts.work, opts.base_image, opts.uid, container.admin_key, reference
                ),
            )
    except (CheckFailed, AssertionError) as exc:
        print(f"\nimage-check: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if not opts.keep:
            podman.remove_container(container.name)
    print("\n== summary")
    for key, value in report.items():
        if not key.startswith("  "):
            print(f"   {key}: {value}")
    print("\n== commands run")
    for command in podman.commands:
        print(f"   {command}")
    print("\nimage-check: PASSED")
    return 0


def _remember(store: dict[str, object], body: dict[str, object]) -> str:
    store.update(body)
    names = [p["name"] for p in body["prefixes"]]  # type: ignore[attr-defined]
    return f"{len(probes.TEXTS)} texts x {len(names)} vectors: {', '.join(names)}"


if __name__ == "__main__":
    sys.exit(main())
