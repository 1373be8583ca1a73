"""The live server a documentation example runs against, and the shell it runs in (for
tests/support/example_routes.py and tests/support/example_checks.py)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.doc_examples import Example


@dataclass
class Live:
    """The server the examples talk to and the shell they run in."""

    url: str
    cwd: Path  # what the reader's working directory would be: prefixes/ (served) and .venv/
    env: dict[str, str]
    dev_python: str  # an interpreter with the test tools (pytest, openai): what `make test` installs
    hidden: int  # the backbone's vector size (from the model's config.json)
    timeout: float = 600.0
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def close(self) -> None:
        """Close the client's connections (``contextlib.closing``): an unclosed socket is a warning,
        which the test suite treats as an error."""
        self.http.close()

    @property
    def prefix_dir(self) -> Path:
        return self.cwd / "prefixes"

    def rewrite(self, text: str) -> str:
        return text.replace("localhost:8080", f"localhost:{self.url.rsplit(':', 1)[1]}")

    def bash(self, text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", text],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )

    def folder(self, collection: str) -> Path:
        """Where the files of ``prefixes`` or ``heads`` live."""
        return self.prefix_dir if collection == "prefixes" else self.prefix_dir / collection

    def listed(self, collection: str = "prefixes") -> dict[str, dict[str, Any]]:
        """``GET /prefixes`` (or ``/heads``) now: name -> entry."""
        r = self.http.get(f"/{collection}")
        assert r.status_code == 200, r.text
        return {p["name"]: p for p in r.json()[collection]}

    def default_members(self) -> list[str]:
        """The default served model's prefix names, read from the folder's models.json."""
        doc = json.loads((self.prefix_dir / "models.json").read_text())
        return [m if isinstance(m, str) else m["name"] for m in doc["models"][doc["default"]]["prefixes"]]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A reference request of the check itself (not the example's): 200 and its JSON."""
        r = self.http.post(path, json=body)
        assert r.status_code == 200, f"POST {path}: {r.status_code} {r.text[:500]}"
        doc: dict[str, Any] = r.json()
        return doc


def report(example: Example, done: subprocess.CompletedProcess[str], why: str) -> str:
    """What failed: the example, where it is written, why, and its output."""
    return (
        f"{example.where}: {example.one_line}\n{why}\nexit {done.returncode}\n"
        f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    )
