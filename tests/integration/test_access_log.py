"""The uvicorn access log of the real server never holds query values (a key sent in the URL)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import Settings
from service.server import ACCESS_LOGGER, REDACTED, redact_query
from tests.support.fake_encoder import FakeEncoder
from tests.support.http import fill_folder
from tests.support.inthread import running_server

SECRET = "sk-very-secret-key-123"


def test_a_key_in_the_url_never_reaches_the_access_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(prefix_dir=fill_folder(tmp_path / "prefixes"), host="127.0.0.1", log_level="info")
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    with (
        running_server(create_app(settings, encoder=FakeEncoder()), settings) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        assert client.get(f"/health?api_key={SECRET}").status_code == 200
        assert client.post(f"/embed?key={SECRET}&x=1", json={"inputs": "a b"}).status_code in (200, 503)
        assert client.get(f"/nowhere?{SECRET}").status_code == 404
    access = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    lines = [r.getMessage() for r in access]
    assert len(lines) >= 3, lines  # the requests were logged ...
    assert not any(SECRET in line for line in lines), lines  # ... without the key
    assert any(f"/health?api_key={REDACTED}" in line for line in lines), lines
    assert any(f"/embed?key={REDACTED}&x={REDACTED}" in line for line in lines), lines
    assert any(f"/nowhere?{REDACTED}" in line for line in lines), lines


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/health", "/health"),
        ("/x?", "/x?"),
        ("/x?a=1&a=2", f"/x?a={REDACTED}&a={REDACTED}"),
        ("/x?api%20key=s%20k", f"/x?api%20key={REDACTED}"),
        ("/x?token", f"/x?{REDACTED}"),
    ],
)
def test_redact_query(path: str, logged: str) -> None:
    assert redact_query(path) == logged
