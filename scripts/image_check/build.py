"""Build the CPU image FROM the local Debian base, with pip's own sources of this machine.

Where the PyTorch index cannot be reached, pip's local wheel folder (find-links) holds the CPU wheel
of torch: it is mounted into the RUN steps and passed as ``PIP_FIND_LINKS``, and the Dockerfile's
``CPU_TORCH_INDEX`` is emptied so that pip takes that wheel. The package index is reached through a
TLS proxy whose CA is in the host's bundle only: that bundle is mounted over the image's for the RUN
steps (a mount is never part of a layer). Everything else is the Dockerfile's production path.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from scripts.image_check.podman import Podman, check

REPO = Path(__file__).resolve().parents[2]
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's and Ubuntu's
# What the image is built by, apart from the code and the pins (which the test suite covers): a run's
# record names their digest, and tests/unit/test_docker.py fails when they changed since then.
BUILD_INPUTS = ("Dockerfile", ".dockerignore", "docker/seed-prefixes.sh")


def build_inputs_digest() -> str:
    """sha256 (16 hex digits) of :data:`BUILD_INPUTS`, names and contents."""
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def pip_setting(name: str) -> str:
    """pip's configured value of ``name`` (environment first, then its config files), or ''."""
    env = os.environ.get(f"PIP_{name.upper().replace('-', '_')}")
    if env is not None:
        return env
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", f"global.{name}"], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def torch_from_local_wheels() -> bool:
    """True when pip's local sources hold the CPU wheel of the torch pin (scripts/torch_index.sh)."""
    pin = re.search(r'"(torch==[^"]+)"', (REPO / "pyproject.toml").read_text())
    check(pin, "no torch pin in pyproject.toml")
    assert pin is not None
    done = subprocess.run(
        [str(REPO / "scripts" / "torch_index.sh"), "--cpu", sys.executable, pin.group(1)],
        capture_output=True,
        text=True,
        check=True,
    )
    print(done.stderr.strip())
    return done.stdout.strip() == ""


def build_arguments(base_image: str, app_uid: int) -> tuple[dict[str, str], list[str]]:
    """The ``--build-arg`` values and ``-v`` mounts of the CPU image's build on this machine."""
    args = {"VARIANT": "cpu", "CPU_BASE_IMAGE": base_image, "APP_UID": str(app_uid)}
    volumes: list[str] = []
    cert = pip_setting("cert")
    if cert and Path(cert).is_file():
        volumes.append(f"{cert}:{IMAGE_CA_BUNDLE}:ro")
    folders = [f for f in pip_setting("find-links").split() if Path(f).is_dir()]
    if folders:
        volumes += [f"{f}:{f}:ro" for f in folders]
        args["PIP_FIND_LINKS"] = " ".join(folders)
        if torch_from_local_wheels():
            args["CPU_TORCH_INDEX"] = ""
    return args, volumes


def build_image(podman: Podman, tag: str, base_image: str, app_uid: int) -> dict[str, str]:
    """Build ``tag``; the measures for the report (build time, image size, Python of the image)."""
    args, volumes = build_arguments(base_image, app_uid)
    tagged, seconds = podman.build(tag, args, volumes)
    log = (podman.log_dir / "build.log").read_text(errors="replace")
    # FROM steps are never "from the cache": count the others
    steps = len(re.findall(r"^\[\d+/\d+\] STEP \d+/\d+: (?!FROM )", log, re.M))
    cached = log.count("--> Using cache")
    size = int(str(podman.inspect("image", tag)["Size"]))
    python = podman.run("run", "--rm", "--entrypoint", "python", tag, "--version").stdout.strip()
    torch = podman.run(
        "run", "--rm", "--entrypoint", "python", tag, "-c", "import torch; print(torch.__version__)"
    ).stdout.strip()
    check(torch.endswith("+cpu"), f"the CPU image has torch {torch}, not the CPU build")
    tools = podman.run(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        tag,
        "-c",
        "ls /opt/venv/bin | grep -E '^(pytest|mypy|ruff)$' || true",
    ).stdout.split()
    check(not tools, f"test/dev tools in the image: {tools}")
    return {
        "build inputs": f"sha256 {build_inputs_digest()} of {', '.join(BUILD_INPUTS)}",
        "build time": (
            f"{tagged:.0f} s to the tagged image, {seconds:.0f} s until podman exited "
            f"({cached} of {steps} steps from the layer cache)"
        ),
        "image size": f"{size / 1e6:.0f} MB ({tag}; {python}, torch {torch})",
    }
