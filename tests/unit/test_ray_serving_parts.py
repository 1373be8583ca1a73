"""The parts of the Ray Serve integration that need no Ray: the ``ray-serve`` flag parsing (every
Settings field), the proxy's JSON error for a replica that died, and ``/info``'s ``replica``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.errors import InvalidInput
from service.serving.ray_launch import settings_from_flags, split_ray_flags
from service.serving.ray_proxy import JsonErrorWhenNoResponse, proxy_middlewares
from tests.support.http import fake_app, fill_folder


def test_ray_serve_flags_are_the_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX_EMBED_DEVICE", "cuda")  # the environment fills what flags leave out
    s = settings_from_flags(
        ["--prefix-dir", "/p", "--no-watch", "--port=9000", "--api-key", "k1", "--api-key", "k2"]
        + ["--max-client-batch", "7", "--backend", "onnx"]
    )
    assert (s.prefix_dir, s.watch, s.port, s.max_client_batch, s.backend) == (
        Path("/p"),
        False,
        9000,
        7,
        "onnx",
    )
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    assert s.device == "cuda"
    assert settings_from_flags(["--watch"]).watch is True


@pytest.mark.parametrize(
    ("args", "error", "fragment"),
    [
        (["--no-such-flag", "1"], InvalidInput, "unknown option --no-such-flag"),
        (["stray"], InvalidInput, "unexpected argument 'stray'"),
        (["--port"], InvalidInput, "--port needs a value"),
        (["--backend", "tensorflow"], ValidationError, "backend"),
    ],
)
def test_bad_ray_serve_flags_are_refused_with_the_reason(args, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        settings_from_flags(args)


def test_rays_own_flags_are_split_from_the_services() -> None:
    args = ["--replica-cpus", "0.5", "--port", "1", "--max-ongoing-requests=8", "--replica-gpus", "1"]
    assert split_ray_flags(args) == (
        {"replica_cpus": 0.5, "max_ongoing_requests": 8, "replica_gpus": 1.0},
        ["--port", "1"],
    )
    with pytest.raises(InvalidInput, match="--replica-cpus needs a value"):
        split_ray_flags(["--replica-cpus"])
    with pytest.raises(InvalidInput, match="'many' is not a number"):
        split_ray_flags(["--max-ongoing-requests", "many"])


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
