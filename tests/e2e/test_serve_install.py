"""`make install` (what `make serve` runs) into a new venv, for real: the runtime only, the CPU build
of torch and no CUDA package on a machine without a GPU, no test or dev tool; and the server it
installed serves.

pip works from this machine's sources and caches (the CPU wheel of torch from its wheel folder,
scripts/torch_index.sh), so this takes a few minutes, not a download of gigabytes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.support.server_process import SERVE_DEFAULTS, TEST_ENV, ServerProcess, stop_gracefully

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[;]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="checks the install of a machine without a GPU"
)
@pytest.mark.timeout(1800)  # a full install: minutes on 2 busy CPUs (pytest's default is 300 s)
def test_the_serve_install_is_lean_cpu_only_and_serves(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "install", f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch: the CPU build" in done.stderr  # scripts/torch_index.sh said why
    python = venv / "bin" / "python"
    listing = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    installed = {_name(p["name"]): p["version"] for p in json.loads(listing.stdout)}
    assert installed["torch"].endswith("+cpu"), installed["torch"]
    assert not [n for n in installed if n.startswith("nvidia-") or n in ("triton", "cuda-bindings")]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tools = {_name(r) for extra in ("test", "dev") for r in extras[extra]}
    assert not tools & set(installed), tools & set(installed)
    assert "onnxruntime" in installed
    assert "onnxruntime-gpu" not in installed
    # the lean venv serves: torch backend (no ONNX export), the shipped prefixes
    serve = [str(python), "-m", "service", "serve", *SERVE_DEFAULTS]
    server = ServerProcess(
        [*serve, "--backend", "torch", "--prefix-dir", str(REPO / "prefixes")],
        log_path=tmp_path / "server.log",
        env=TEST_ENV,
        cwd=tmp_path,
    )
    server.start()
    try:
        server.wait_ready(300)
        r = httpx.post(f"{server.url}/embed", json={"inputs": ["I loved this film"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["prefixes"]) >= 2  # base and the shipped prefixes
    finally:
        stop_gracefully(server, 60)
