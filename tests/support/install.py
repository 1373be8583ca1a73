"""A newcomer's checkout and serve install, for real: ``git clone`` of this repository's HEAD (what is
committed, not the working tree) into a temp folder, then ``make install`` (what ``make serve`` runs)
into the clone's own ``.venv``. Done once per test session (the ``serve_install`` fixture) and shared
by tests/e2e/test_serve_install.py and tests/e2e/test_newcomer.py.

pip works from this machine's sources and caches (the CPU wheel of torch from its wheel folder,
scripts/torch_index.sh), so this takes minutes, not a download of gigabytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 1500


@dataclass(frozen=True)
class ServeInstall:
    root: Path  # the clone
    make_log: str  # make's stdout + stderr
    seconds: float  # clone + install, wall clock

    @property
    def python(self) -> Path:
        return self.root / ".venv" / "bin" / "python"

    def installed(self) -> dict[str, str]:
        """Distribution name (normalized) -> version, as the venv's pip lists them."""
        listing = subprocess.run(
            [str(self.python), "-m", "pip", "list", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        return {normalized(p["name"]): p["version"] for p in json.loads(listing.stdout)}


def normalized(requirement: str) -> str:
    """A requirement's distribution name, lower case with dashes (``Foo_Bar[x]==1`` -> ``foo-bar``)."""
    return re.split(r"[=<>\[;]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def newcomer_env(**extra: str) -> dict[str, str]:
    """The environment of a reader who just cloned: no ``PREFIX_EMBED_*`` setting (the tests' own
    defaults, such as ``PREFIX_EMBED_BACKEND=torch``, removed), no ``PYTHONPATH`` into this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFIX_EMBED_")}
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return {**env, **extra}


def clone_head(dest: Path) -> Path:
    """``git clone`` of REPO, checked out at REPO's HEAD commit (also when HEAD is detached)."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", head], check=True)
    return dest


def clone_and_install(dest: Path) -> ServeInstall:
    """Clone HEAD into ``dest`` and run ``make install`` there; AssertionError with make's output."""
    start = time.monotonic()
    clone_head(dest)
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(dest), "install"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env=newcomer_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return ServeInstall(dest, done.stdout + done.stderr, time.monotonic() - start)


def assert_lean_cpu_install(install: ServeInstall) -> None:
    """The serve install: the CPU build of torch (and no CUDA package) on a machine without a GPU,
    the CPU ONNX Runtime, and no test or dev tool."""
    assert "torch: the CPU build" in install.make_log  # scripts/torch_index.sh said why
    installed = install.installed()
    assert installed["torch"].endswith("+cpu"), installed["torch"]
    assert not [n for n in installed if n.startswith("nvidia-") or n in ("triton", "cuda-bindings")]
    extras = tomllib.loads((install.root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tools = {normalized(r) for extra in ("test", "dev") for r in extras[extra]}
    assert not tools & set(installed), tools & set(installed)
    assert "onnxruntime" in installed
    assert "onnxruntime-gpu" not in installed
