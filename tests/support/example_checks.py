"""Run one documentation example against a live server and check what it did, for real.

Every example runs as written in ``bash`` (in the folder the reader would be in: the clone, with its
``prefixes/`` served and its ``.venv``), with one rewrite: ``localhost:8080`` becomes the live
port. A ``curl`` call also gets ``-w`` writing its HTTP status to stderr, so stdout stays the
body. Then, per route or command, the status, the parsed body and the names it must hold are
checked against references that do not come from the response itself: the request's own fields,
``prefixes/models.json``, the folder's files and their sha256, a second read of the live state, or
another route. An example of an unknown route or command still has its exit status, its status
code, its JSON and the names it mentions checked (``_mentioned``).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from tests.support.doc_examples import Example
from tests.support.example_plan import Kind
from tests.support.waiting import wait_until

_STATUS = "__example_status__"


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


def run_example(example: Example, kind: Kind, live: Live) -> None:
    """Run ``example`` and check it; an AssertionError names the example and shows its output."""
    CHECKS[kind](example, live)


def _report(example: Example, done: subprocess.CompletedProcess[str], why: str) -> str:
    return f"{example.where}: {example.one_line}\n{why}\nexit {done.returncode}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"


# ---- curl -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurlCall:
    method: str
    path: str
    body: Any  # the parsed -d JSON (None without one)
    upload: str | None  # the file of --data-binary @FILE

    @classmethod
    def parse(cls, words: list[str]) -> CurlCall:
        method, url, data, upload = "", "", None, None
        it = iter(words[words.index("curl") + 1 :])
        for word in it:
            if word in ("-X", "--request"):
                method = next(it)
            elif word in ("-d", "--data", "--data-raw"):
                data = next(it)
            elif word == "--data-binary":
                upload = next(it).removeprefix("@")
            elif word in ("-H", "--header", "-o", "--output", "-w", "--write-out"):
                next(it)
            elif "localhost:8080" in word:
                url = word
        assert url, f"no localhost:8080 URL in {words}"
        path = urlsplit(url if "://" in url else f"http://{url}").path
        method = method or ("POST" if data is not None or upload else "GET")
        return cls(method.upper(), path, json.loads(data) if data is not None else None, upload)


def check_curl(example: Example, live: Live) -> None:
    call = CurlCall.parse(example.words)
    text = re.sub(
        r"\bcurl\b", f"curl -w '%{{stderr}}{_STATUS}%{{http_code}}\\n'", live.rewrite(example.text), count=1
    )
    done = live.bash(text)
    assert done.returncode == 0, _report(example, done, "curl failed")
    found = re.search(_STATUS + r"(\d{3})", done.stderr)
    assert found, _report(example, done, "no HTTP status")
    status = int(found[1])
    assert 200 <= status < 300, _report(example, done, f"HTTP {status}")
    try:
        body = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(_report(example, done, "the body is not JSON")) from None
    route = next(
        (check for pattern, check in ROUTES if re.fullmatch(pattern, f"{call.method} {call.path}")), None
    )
    try:
        (route or _mentioned)(call, status, body, live)
    except AssertionError as exc:
        raise AssertionError(_report(example, done, f"check failed: {exc}")) from None


def _mentioned(call: CurlCall, status: int, body: Any, live: Live) -> None:
    """Any route: every name the request mentions (a path's last segment after the collection, the
    keys of a JSON patch, the names listed under prefixes/tasks/heads) is in the response."""
    names = set()
    parts = call.path.strip("/").split("/")
    if len(parts) >= 2 and parts[-2] in ("prefixes", "heads"):
        names.add(parts[-1])
    if isinstance(call.body, dict):
        for key, value in call.body.items():
            if isinstance(value, list) and key in ("prefixes", "tasks", "heads"):
                names |= {v for v in value if isinstance(v, str)}
            if isinstance(value, dict) and call.method == "PATCH":
                names.add(key)
    text = json.dumps(body)
    assert all(f'"{n}"' in text for n in names), f"the response misses some of {sorted(names)}"


def _size(value: Any, encoding: str) -> int:
    """Dimensions one encoded vector covers (base64: float32 bytes; binary: 8 per byte)."""
    raw = len(base64.b64decode(value)) if isinstance(value, str) else len(value)
    return {"base64": raw // 4, "binary": raw * 8, "ubinary": raw * 8}.get(encoding, raw)


def _embed(call: CurlCall, status: int, body: Any, live: Live) -> None:
    req = call.body
    texts = [req["inputs"]] if isinstance(req["inputs"], str) else req["inputs"]
    names = req.get("prefixes") or live.default_members()
    encoding = req.get("encoding", "float")
    assert [p["name"] for p in body["prefixes"]] == names, (body["prefixes"], names)
    assert [p["dim"] for p in body["prefixes"]] == [live.hidden] * len(names)
    assert [d["index"] for d in body["data"]] == list(range(len(texts)))
    want = len(names) * live.hidden
    for item in body["data"]:
        if req.get("combine") == "concat":
            assert want <= _size(item["embedding"], encoding) < want + 8, (encoding, want)
        else:
            assert list(item["embeddings"]) == names
            assert all(
                live.hidden <= _size(v, encoding) < live.hidden + 8 for v in item["embeddings"].values()
            )
    assert body["usage"]["prompt_tokens"] > 0


def _collection(call: CurlCall) -> tuple[str, str]:
    """(``prefixes`` | ``heads``, the name after it or "") of a call's path."""
    parts = call.path.strip("/").split("/")
    return parts[0], parts[1] if len(parts) > 1 else ""


def _listing(call: CurlCall, status: int, body: Any, live: Live) -> None:
    """``GET /prefixes`` or ``/heads``: every file of the folder is listed (and ``base``)."""
    collection, _ = _collection(call)
    files = {p.name.removesuffix(".safetensors") for p in live.folder(collection).glob("*.safetensors")}
    listed = {p["name"] for p in body[collection]}
    assert files <= listed, f"files not listed: {sorted(files - listed)}"
    assert collection == "heads" or "base" in listed


def _patch(call: CurlCall, status: int, body: Any, live: Live) -> None:
    """The patch is in force: a second read of the listing shows each named entry's new state."""
    collection, name = _collection(call)
    patch = {name: call.body} if name else call.body
    _mentioned(call, status, body, live)
    now = live.listed(collection)
    for key, change in patch.items():
        assert now[key]["enabled"] is change["enabled"], (key, now[key]["enabled"])


def _put(call: CurlCall, status: int, body: Any, live: Live) -> None:
    """A new file: 201, written into the folder, listed with the digest the response gave; a prefix's
    digest is the sha256 of the uploaded bytes (they carry their content_sha256, so are stored as sent)."""
    collection, name = _collection(call)
    assert call.upload is not None
    sent = (live.cwd / call.upload).read_bytes()
    assert status == 201, status  # a new entry (200 would be a replaced one)
    assert body["name"] == name
    assert live.listed(collection)[name]["digest"] == body["digest"]
    stored = live.folder(collection) / f"{name}.safetensors"
    if collection == "prefixes":
        assert body["digest"] == hashlib.sha256(sent).hexdigest()
        assert stored.read_bytes() == sent
    assert stored.is_file()


def _delete(call: CurlCall, status: int, body: Any, live: Live) -> None:
    collection, name = _collection(call)
    assert body["deleted"] == name, body
    assert name not in live.listed(collection)
    assert not (live.folder(collection) / f"{name}.safetensors").exists()


ROUTES: list[tuple[str, Callable[[CurlCall, int, Any, Live], None]]] = [
    (r"POST /embed", _embed),
    (r"GET /(prefixes|heads)", _listing),
    (r"PATCH /(prefixes|heads)(/[^/]+)?", _patch),
    (r"PUT /(prefixes|heads)/[^/]+", _put),
    (r"DELETE /(prefixes|heads)/[^/]+", _delete),
]


# ---- python -m service ... -------------------------------------------------------------------


def check_service(example: Example, live: Live) -> None:
    done = live.bash(live.rewrite(example.text))
    assert done.returncode == 0, _report(example, done, "the command failed")
    assert "Traceback" not in done.stderr, _report(example, done, "a traceback")
    words = example.words
    args = words[words.index("service") + 1 :]
    try:
        if args[0] == "embed":
            _embed_command(args, done.stdout, live)
        elif args[:2] == ["models", "show"]:
            doc = json.loads((live.prefix_dir / "models.json").read_text())
            assert all(name in done.stdout for name in doc["models"]), "a model is missing"
        elif args[:2] == ["models", "pin"]:
            _pinned(args, live)
        else:  # a command this test has no specific check for: its JSON, if it prints some, parses
            if done.stdout.lstrip()[:1] in ("{", "["):
                json.loads(done.stdout)
    except (AssertionError, ValueError, KeyError) as exc:
        raise AssertionError(_report(example, done, f"check failed: {exc!r}")) from None


def _option(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def _embed_command(args: list[str], stdout: str, live: Live) -> None:
    assert "--json" in args, "embed without --json prints a table: give this check a reader for it"
    takes_value = {"--prefix", "--prefix-dir", "--combine", "--encoding", "--model", "--backend", "--device"}
    texts = [a for i, a in enumerate(args[1:], 1) if not a.startswith("-") and args[i - 1] not in takes_value]
    doc = json.loads(stdout)
    names = _option(args, "--prefix") or live.default_members()
    assert [p["name"] for p in doc["prefixes"]] == names, doc["prefixes"]
    assert len(doc["data"]) == len(texts)
    # the same text through the live server: the command runs the routes' own pipeline
    served = live.http.post("/embed", json={"inputs": texts, "prefixes": names}).json()
    for mine, theirs in zip(doc["data"], served["data"], strict=True):
        for name in names:
            np.testing.assert_allclose(mine["embeddings"][name], theirs["embeddings"][name], atol=1e-5)


def _pinned(args: list[str], live: Live) -> None:
    name, members = _option(args, "--name")[0], _option(args, "--prefix")
    doc = json.loads((live.prefix_dir / "models.json").read_text())
    pinned = doc["models"][name]["prefixes"]
    listed = live.listed()
    assert [(m["name"], m["digest"]) for m in pinned] == [(n, listed[n]["digest"]) for n in members]

    def served() -> bool:  # the live server's watcher picks the new model up
        models = {m["id"]: m for m in live.http.get("/v1/models").json()["data"]}
        return name in models and models[name].get("dimension") == len(members) * live.hidden

    wait_until(served, 30, f"GET /v1/models listing {name}")


# ---- python -m pytest, python blocks ----------------------------------------------------------


def check_pytest(example: Example, live: Live) -> None:
    """A test command of the README: run with the dev interpreter (the lean install has no pytest)."""
    text = re.sub(r"^\s*\S*python3?\b", shlex.quote(live.dev_python), example.text, count=1)
    done = live.bash(text)
    assert done.returncode == 0, _report(example, done, "the tests failed")
    assert re.search(r"\b\d+ passed\b", done.stdout), _report(example, done, "no passed tests")


def check_python(example: Example, live: Live) -> None:
    """A python block, its last expression printed as JSON; a block that creates OpenAI embeddings
    must return the vector ``/embed`` gives for the same model (a prefix) and text."""
    tree = ast.parse(live.rewrite(example.text))
    last = tree.body[-1]
    if isinstance(last, ast.Expr):
        tree.body[-1] = ast.parse(f"print(__import__('json').dumps({ast.unparse(last.value)}))").body[0]
    done = subprocess.run(
        [live.dev_python, "-c", ast.unparse(tree)], cwd=live.cwd, env=live.env, capture_output=True, text=True,
        timeout=live.timeout,
    )  # fmt: skip
    assert done.returncode == 0, _report(example, done, "the block failed")
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "create"
    ]  # fmt: skip
    for call in calls:
        kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        got = json.loads(done.stdout)
        served = live.http.post("/embed", json={"inputs": kw["input"], "prefixes": [kw["model"]]}).json()
        want = served["data"][0]["embeddings"][kw["model"]]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=example.where)


CHECKS: dict[Kind, Callable[[Example, Live], None]] = {
    "curl": check_curl,
    "service": check_service,
    "pytest": check_pytest,
    "python": check_python,
}
