"""The parts of the Ray Serve integration that need no Ray: the ``ray-serve`` flags (serve's, generated
from Settings, plus the replica options), the proxy's JSON error for a replica that died, and ``/info``'s ``replica``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from service.cli import app
from service.config import Settings
from service.serving import ray_launch
from service.serving.ray_proxy import JsonErrorWhenNoResponse, proxy_middlewares
from tests.support.http import fake_app, fill_folder


def invoke_ray_serve(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[Result, dict[str, Any]]:
    """``ray-serve ARGS`` through the real CLI, with Ray's launcher replaced by a recorder."""
    seen: dict[str, Any] = {}

    def record(settings: Settings, **scaling: Any) -> int:
        seen.update(scaling, settings=settings)
        return 0

    monkeypatch.setattr(ray_launch, "main", record)
    return CliRunner().invoke(app, ["ray-serve", *args]), seen


def test_ray_serve_flags_are_the_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX_EMBED_DEVICE", "cuda")  # the environment fills what flags leave out
    result, seen = invoke_ray_serve(
        monkeypatch,
        ["--prefix-dir", "/p", "--no-watch", "--port=9000", "--api-key", "k1", "--api-key", "k2"]
        + ["--max-client-batch", "7", "--backend", "onnx", "--replicas", "2"]
        + ["--replica-cpus", "0.5", "--max-ongoing-requests=8", "--replica-gpus", "1"],
    )
    assert result.exit_code == 0, result.output
    s = seen["settings"]
    assert (s.prefix_dir, s.watch, s.port, s.max_client_batch, s.backend) == (
        Path("/p"),
        False,
        9000,
        7,
        "onnx",
    )
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    assert s.device == "cuda"
    assert {k: seen[k] for k in ("replicas", "replica_cpus", "replica_gpus", "max_ongoing_requests")} == {
        "replicas": 2,
        "replica_cpus": 0.5,
        "replica_gpus": 1.0,
        "max_ongoing_requests": 8,
    }
    assert seen["autoscale"] is None


def test_ray_serve_and_serve_have_the_same_service_flags() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    serve = {o for p in commands["serve"].params for o in (*p.opts, *p.secondary_opts)}
    ray = {o for p in commands["ray-serve"].params for o in (*p.opts, *p.secondary_opts)}
    assert serve <= ray
    assert ray - serve == {
        "--replicas",
        "--autoscale",
        "--replica-cpus",
        "--replica-gpus",
        "--max-ongoing-requests",
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--no-such-flag", "1"], "No such option"),
        (["stray"], "unexpected extra argument"),
        (["--port"], "requires an argument"),
        (["--backend", "tensorflow"], "tensorflow"),
        (["--replica-cpus", "many"], "'--replica-cpus': input should be a valid number"),
        (["--replicas", "0"], "greater than or equal to 1"),
    ],
)
def test_bad_ray_serve_flags_exit_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, args: list[str], fragment: str
) -> None:
    result, seen = invoke_ray_serve(monkeypatch, args)
    assert result.exit_code == 2, result.output
    assert fragment.lower() in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split()).lower()
    assert seen == {}


def _proxy(endpoint) -> TestClient:
    app = Starlette(routes=[Route("/x", endpoint)], middleware=proxy_middlewares())
    return TestClient(app, raise_server_exceptions=False)


def test_a_request_left_without_response_gets_the_json_replica_error() -> None:
    class Silent:  # what Ray's proxy does when the replica died mid-request: no response at all
        async def __call__(self, scope, receive, send) -> None:
            return None

    r = TestClient(JsonErrorWhenNoResponse(Silent())).get("/anything")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "replica_failed"

    async def boom(request):
        raise RuntimeError("replica died")

    r = _proxy(boom).get("/x")
    assert (r.status_code, r.json()["error"]["type"]) == (502, "server_error")


def test_responses_that_started_pass_through_untouched() -> None:
    async def ok(request):
        return PlainTextResponse("fine", status_code=503)  # e.g. Ray's own backpressure answer

    r = _proxy(ok).get("/x")
    assert (r.status_code, r.text) == (503, "fine")
    assert isinstance(proxy_middlewares()[0], Middleware)


def test_info_names_the_process_and_no_replica_id_outside_ray(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes")) as (client, _, runtime):
        replica = client.get("/info").json()["replica"]
        assert replica["id"] is None
        assert replica["pid"] == os.getpid()
        runtime.replica_id = "abc123"
        assert client.get("/info").json()["replica"]["id"] == "abc123"
