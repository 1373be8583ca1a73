"""A ``curl`` example of the documentation, run against a live server and checked for real.

The example runs as written in ``bash`` with ``localhost:8080`` rewritten to the live port and ``-w``
writing its HTTP status to stderr (stdout stays the body). Then, per route, the status, the parsed body
and the names it must hold are checked against references that do not come from the response itself:
the request's own fields, ``prefixes/models.json``, the folder's files and their sha256, a second read
of the live state, the head files' own tensors (``/predict``: tests/support/heads.py). An
example of a route without a check of its own still has its exit status, status code, JSON and the
names it mentions checked (``_mentioned``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.support.doc_examples import Example
from tests.support.example_live import Live, report
from tests.support.heads import check_predictions, predict_embed_body

_STATUS = "__example_status__"


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
    assert done.returncode == 0, report(example, done, "curl failed")
    found = re.search(_STATUS + r"(\d{3})", done.stderr)
    assert found, report(example, done, "no HTTP status")
    status = int(found[1])
    assert 200 <= status < 300, report(example, done, f"HTTP {status}")
    try:
        body = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(report(example, done, "the body is not JSON")) from None
    route = next(
        (check for pattern, check in ROUTES if re.fullmatch(pattern, f"{call.method} {call.path}")), None
    )
    try:
        (route or _mentioned)(call, status, body, live)
    except AssertionError as exc:
        raise AssertionError(report(example, done, f"check failed: {exc}")) from None


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
    """A new file: 201, written into the folder as sent (it carries its content_sha256), listed with
    the digest the response gave, which is the sha256 of the uploaded bytes."""
    collection, name = _collection(call)
    assert call.upload is not None
    sent = (live.cwd / call.upload).read_bytes()
    assert status == 201, status  # a new entry (200 would be a replaced one)
    assert body["name"] == name
    assert live.listed(collection)[name]["digest"] == body["digest"]
    stored = live.folder(collection) / f"{name}.safetensors"
    assert body["digest"] == hashlib.sha256(sent).hexdigest()  # stored as sent: a digest of its bytes
    assert stored.read_bytes() == sent


def _delete(call: CurlCall, status: int, body: Any, live: Live) -> None:
    collection, name = _collection(call)
    assert body["deleted"] == name, body
    assert name not in live.listed(collection)
    assert not (live.folder(collection) / f"{name}.safetensors").exists()


def _predict(call: CurlCall, status: int, body: Any, live: Live) -> None:
    """The heads asked for (``null``: every enabled and available head, by name), each one's scores
    those of its file's weights on the unnormalized ``/embed`` vectors of its inputs."""
    req = call.body
    texts = [req["inputs"]] if isinstance(req["inputs"], str) else req["inputs"]
    heads = req.get("tasks") or sorted(
        n for n, h in live.listed("heads").items() if h["enabled"] and h["available"]
    )
    assert [h["name"] for h in body["heads"]] == heads, ([h["name"] for h in body["heads"]], heads)
    embed = live.post("/embed", predict_embed_body(body, texts))
    check_predictions(body, texts, live.folder("heads"), embed)
    assert body["usage"]["prompt_tokens"] == embed["usage"]["prompt_tokens"]


ROUTES: list[tuple[str, Callable[[CurlCall, int, Any, Live], None]]] = [
    (r"POST /embed", _embed),
    (r"POST /predict", _predict),
    (r"GET /(prefixes|heads)", _listing),
    (r"PATCH /(prefixes|heads)(/[^/]+)?", _patch),
    (r"PUT /(prefixes|heads)/[^/]+", _put),
    (r"DELETE /(prefixes|heads)/[^/]+", _delete),
]
