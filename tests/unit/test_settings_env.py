"""Settings read from the real environment (issue 15.1): every documented form of the API keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from service.config import Settings


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        ("key1,key2", ["key1", "key2"]),  # the form of the README and docker-compose
        ("key1, key2 ,", ["key1", "key2"]),
        ("only-key", ["only-key"]),
        ('["key1", "key2"]', ["key1", "key2"]),
        ('  ["a,b"]', ["a,b"]),  # a JSON list may hold a key with a comma
        ("", []),
    ],
)
def test_api_keys_from_environment(monkeypatch: pytest.MonkeyPatch, raw: str, keys: list[str]) -> None:
    monkeypatch.setenv("PREFIX_EMBED_API_KEYS", raw)
    assert [k.get_secret_value() for k in Settings().api_keys] == keys


def test_api_keys_bad_json_list_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX_EMBED_API_KEYS", '["key1", ')
    with pytest.raises(ValidationError, match="JSON list but is not valid JSON"):
        Settings()


def test_api_keys_comma_form_in_a_fresh_process() -> None:
    # The process reads its environment at start, exactly as `python -m service serve` does.
    env = {**os.environ, "PREFIX_EMBED_API_KEYS": "key1,key2"}
    code = (
        "import json; from service.config import Settings; "
        "print(json.dumps([k.get_secret_value() for k in Settings().api_keys]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == ["key1", "key2"]
