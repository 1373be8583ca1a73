"""docker/docker-compose.yml's CPU profile, run by podman-compose: build (through the compose file's
own build section), start, health, the same vectors as the local service, a clean stop."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from scripts.image_check import probes
from scripts.image_check.build import REPO, build_arguments
from scripts.image_check.container import copy_prefixes
from scripts.image_check.podman import CheckFailed, Podman, check, tail
from service.procs import free_port

COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
SERVICE = "prefix-embed-cpu"


def install_podman_compose(work: Path) -> Path:
    """podman-compose, pinned in pyproject.toml (image-check-tools), in a venv of its own."""
    pins = re.search(r'^image-check-tools = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M)
    check(pins, "no image-check-tools in pyproject.toml")
    assert pins is not None
    venv = work / "podman-compose"
    stamp = venv / f".installed {pins.group(1)}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            *pins.group(1).split(),
        ]
        done = subprocess.run(pip, capture_output=True, text=True)
        check(done.returncode == 0, f"installing {pins.group(1)}: {done.stdout}{done.stderr}")
        stamp.touch()
    return venv / "bin" / "podman-compose"


class Compose:
    """``podman-compose -f docker/docker-compose.yml --profile cpu ...`` with the check's environment."""

    def __init__(self, podman: Podman, work: Path, base_image: str, uid: int, admin_key: str) -> None:
        self.podman = podman
        self.exe = str(install_podman_compose(work))
        self.port = free_port()
        self.folder = work / "compose-prefixes"
        copy_prefixes(REPO / "prefixes", self.folder, uid)
        self.env = {
            "PREFIX_EMBED_HOST_PORT": str(self.port),
            "PREFIX_EMBED_UID": str(uid),
            "PREFIX_EMBED_PREFIX_FOLDER": str(self.folder),
            "PREFIX_EMBED_ADMIN_KEY": admin_key,
        }
        build_args, volumes = build_arguments(base_image, uid)
        self.build_args = [
            f"--build-arg={k}={v}" for k, v in build_args.items() if k not in ("VARIANT", "APP_UID")
        ]
        # as build.py's podman build: the same layers, so compose's build comes from the cache
        self.podman_build_args = " ".join(["--format docker --network host", *(f"-v {v}" for v in volumes)])

    def run(self, *args: str, timeout: float = 900, log: str | None = None) -> str:
        argv = ["-f", str(COMPOSE_FILE), "--profile", "cpu", *args]
        done = self.podman.run(*argv, exe=self.exe, timeout=timeout, log=log, env=self.env)
        return done.stdout or ""

    def container(self) -> str:
        found = self.podman.run(
            "ps", "-a", "--filter", f"label=com.docker.compose.service={SERVICE}", "--format", "{{.Names}}"
        ).stdout.split()
        check(len(found) == 1, f"compose containers of {SERVICE}: {found}")
        return found[0]


def check_compose(
    podman: Podman, work: Path, base_image: str, uid: int, admin_key: str, reference: dict[str, Any]
) -> dict[str, str]:
    compose = Compose(podman, work, base_image, uid, admin_key)
    url = f"http://127.0.0.1:{compose.port}"
    compose.run("down", "--timeout", "5")
    started = time.monotonic()
    compose.run(
        "--podman-build-args", compose.podman_build_args,
        "up", "--detach", "--build", *compose.build_args,
        log="compose-up.log",
    )  # fmt: skip
    name = compose.container()

    def alive() -> None:
        if podman.state(name).get("Running") is not True:
            raise CheckFailed(f"compose container {name} stopped:\n{tail(podman.logs(name))}")

    probes.wait_ready(url, 600, alive)
    ready = time.monotonic() - started
    health = podman.run("healthcheck", "run", name, check=False)
    check(health.returncode == 0, f"the compose healthcheck fails: {health.stdout}{health.stderr}")
    info = httpx.get(f"{url}/info", timeout=10).json()
    check(info["backend"] == "onnx", f"compose backend: {info['backend']} ({info.get('backend_reason')})")
    body = probes.embed(url)
    diff = probes.same_vectors(body, reference, "compose service vs local service")
    compose.run("stop", log="compose-stop.log")
    code = int(str(podman.state(name)["ExitCode"]))
    check(code == 0, f"compose stop: exit code {code}\n{tail(podman.logs(name))}")
    compose.run("down", log="compose-down.log")
    return {
        "compose (podman-compose)": (
            f"profile cpu built through the compose file's build section and up to ready in {ready:.0f} s "
            f"(its build included); healthcheck passes; backend {info['backend']}; same vectors "
            f"(max |diff| {diff:.2g}); stop exits 0"
        )
    }
