"""The image's own CMD, ENV and HEALTHCHECK, run as a process here (no docker daemon on CI).

Start the server exactly as the container would (Dockerfile CMD, the image's PREFIX_EMBED_*
variables; only the bind address becomes loopback and the port a free one), wait until the
Dockerfile's health check passes, then send SIGTERM in the middle of a long request: the
request must still get its full answer and the process must exit cleanly (what `docker stop`
relies on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from dockerfile_parse import DockerfileParser

from service.engine.backbone import Backbone
from tests.support.metrics import metric_value
from tests.support.server_process import ServerProcess
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _queue_depth(url: str) -> float:
    return metric_value(httpx.get(f"{url}/metrics", timeout=10).text, "prefix_embed_queue_depth")


def _instruction(parser: DockerfileParser, name: str) -> str:
    return [i["value"] for i in parser.structure if i["instruction"] == name][-1]


def test_sigterm_drains_an_in_flight_request_then_exits(
    tmp_path: Path, minilm: Backbone, write_prefix: Callable[..., Path]
) -> None:
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    cmd = json.loads(_instruction(parser, "CMD"))
    health = json.loads(_instruction(parser, "HEALTHCHECK").partition(" CMD ")[2])
    prefixes = tmp_path / "prefixes"
    prefixes.mkdir()
    write_prefix(prefixes, "alpha", minilm.spec, seed=1)
    write_prefix(prefixes, "beta", minilm.spec, seed=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFIX_EMBED_")}
    env |= {k: v for k, v in parser.envs.items() if k.startswith("PREFIX_EMBED_")}
    env |= {
        "PREFIX_EMBED_PORT": "0",  # the OS picks a free port; the server logs which
        "PREFIX_EMBED_PREFIX_DIR": str(prefixes),
        "PREFIX_EMBED_ONNX_CACHE_DIR": str(tmp_path / "onnx"),
        "PREFIX_EMBED_DEVICE": "cpu",
        "PYTHONPATH": str(REPO),
    }
    assert cmd[0] == "python"
    assert health[0] == "python"
    argv = [sys.executable, *cmd[1:]]
    argv[argv.index("0.0.0.0")] = "127.0.0.1"  # tests serve on loopback only
    server = ServerProcess(argv, log_path=tmp_path / "server.log", env=env, cwd=tmp_path, inherit_env=False)
    server.start()
    try:
        url = server.wait_url(180)
        health_env = {**env, "PREFIX_EMBED_PORT": str(server.port)}

        def healthy() -> bool:
            assert server.running(), server.log()
            return (
                subprocess.run([sys.executable, *health[1:]], env=health_env, capture_output=True).returncode
                == 0
            )

        wait_until(healthy, 180, "the health check passing", poll=0.5)

        # 64 texts x 2 prefixes: a second or more of CPU work, so still running when SIGTERM arrives
        texts = [f"sentence {i} " + "a fairly long text about many things " * 8 for i in range(64)]
        answer: dict[str, object] = {}

        def post() -> None:
            r = httpx.post(f"{url}/embed", json={"inputs": texts, "prefixes": ["alpha", "beta"]}, timeout=120)
            answer.update(status=r.status_code, body=r.json(), at=time.monotonic())

        client = threading.Thread(target=post)
        client.start()

        def in_flight() -> bool:
            assert client.is_alive(), answer
            return _queue_depth(url) >= 1  # admitted by the batcher

        wait_until(in_flight, 60, "the request in flight", poll=0.01)
        signalled_at = time.monotonic()
        server.terminate()
        client.join(timeout=150)
        # a clean drain exits 0 (service/server.py)
        assert server.wait_exit(60) == 0, server.log()
    finally:
        server.kill()
    assert answer["status"] == 200, answer.get("body")
    assert answer["at"] > signalled_at, "the request ended before SIGTERM: nothing was drained"  # type: ignore[operator]
    body = answer["body"]
    assert isinstance(body, dict)
    assert len(body["data"]) == len(texts)
    assert [p["name"] for p in body["prefixes"]] == ["alpha", "beta"]  # the ones asked for, in order
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)
