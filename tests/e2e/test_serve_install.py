"""`make install` (what `make serve` runs) into a new venv, for real: the runtime only, the CPU build
of torch and no CUDA package on a machine without a GPU, no test or dev tool; and the server it
installed serves. The install is a clone of HEAD (the ``serve_install`` fixture, made once per session
and shared with tests/e2e/test_newcomer.py).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.install import ServeInstall, assert_lean_cpu_install, newcomer_env
from tests.support.server_process import SERVE_DEFAULTS, ServerProcess, stop_gracefully

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1800)  # a full install: minutes on 2 busy CPUs (pytest's default is 300 s)
def test_the_serve_install_is_lean_cpu_only_and_serves(serve_install: ServeInstall, tmp_path: Path) -> None:
    assert_lean_cpu_install(serve_install)
    # the lean venv serves: torch backend (no ONNX export), the shipped prefixes
    serve = [str(serve_install.python), "-m", "service", "serve", *SERVE_DEFAULTS]
    server = ServerProcess(
        [*serve, "--backend", "torch", "--prefix-dir", str(serve_install.root / "prefixes")],
        log_path=tmp_path / "server.log",
        cwd=tmp_path,
        env=newcomer_env(),
        inherit_env=False,
    )
    server.start()
    try:
        server.wait_ready(300)
        r = httpx.post(f"{server.url}/embed", json={"inputs": ["I loved this film"]}, timeout=60)
        assert r.status_code == 200, r.text
        assert len(r.json()["prefixes"]) >= 2  # base and the shipped prefixes
    finally:
        stop_gracefully(server, 60)
