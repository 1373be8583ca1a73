"""Run one documentation example against a live server and check what it did, for real: ``curl``
calls (tests/support/example_routes.py), ``python -m service`` commands, ``python -m pytest`` commands
and python blocks.

Every example runs as written in ``bash`` in the folder the reader would be in (the clone, with its
``prefixes/`` served and its ``.venv``), ``localhost:8080`` rewritten to the live port. A command's
output is checked against the live server on the same texts (the command runs the routes' own
pipeline), or against the folder it changed.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from collections.abc import Callable

import numpy as np

from tests.support.doc_examples import Example
from tests.support.example_live import Live, report
from tests.support.example_plan import Kind
from tests.support.example_routes import check_curl
from tests.support.heads import check_predictions, predict_embed_body
from tests.support.waiting import wait_until

__all__ = ["Live", "run_example"]


def run_example(example: Example, kind: Kind, live: Live) -> None:
    """Run ``example`` and check it; an AssertionError names the example and shows its output."""
    CHECKS[kind](example, live)


def check_service(example: Example, live: Live) -> None:
    done = live.bash(live.rewrite(example.text))
    assert done.returncode == 0, report(example, done, "the command failed")
    assert "Traceback" not in done.stderr, report(example, done, "a traceback")
    words = example.words
    args = words[words.index("service") + 1 :]
    try:
        if args[0] == "embed":
            _embed_command(args, done.stdout, live)
        elif args[0] == "predict":
            _predict_command(args, done.stdout, live)
        elif args[:2] == ["models", "show"]:
            doc = json.loads((live.prefix_dir / "models.json").read_text())
            assert all(name in done.stdout for name in doc["models"]), "a model is missing"
        elif args[:2] == ["models", "pin"]:
            _pinned(args, live)
        else:  # a command this test has no specific check for: its JSON, if it prints some, parses
            if done.stdout.lstrip()[:1] in ("{", "["):
                json.loads(done.stdout)
    except (AssertionError, ValueError, KeyError) as exc:
        raise AssertionError(report(example, done, f"check failed: {exc!r}")) from None


def _option(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


# the options of `embed` and `predict` that take a value (the rest of the words are texts or switches)
_TAKES_VALUE = frozenset(
    {"--prefix", "--task", "--prefix-dir", "--combine", "--encoding", "--model", "--backend", "--device"}
)


def _texts(args: list[str]) -> list[str]:
    """The TEXTS arguments of ``embed``/``predict`` (``args[0]`` is the command)."""
    return [a for i, a in enumerate(args[1:], 1) if not a.startswith("-") and args[i - 1] not in _TAKES_VALUE]


def _embed_command(args: list[str], stdout: str, live: Live) -> None:
    assert "--json" in args, "embed without --json prints a table: give this check a reader for it"
    texts = _texts(args)
    doc = json.loads(stdout)
    names = _option(args, "--prefix") or live.default_members()
    assert [p["name"] for p in doc["prefixes"]] == names, doc["prefixes"]
    assert len(doc["data"]) == len(texts)
    # the same text through the live server: the command runs the routes' own pipeline
    served = live.post("/embed", {"inputs": texts, "prefixes": names})
    for mine, theirs in zip(doc["data"], served["data"], strict=True):
        for name in names:
            np.testing.assert_allclose(mine["embeddings"][name], theirs["embeddings"][name], atol=1e-5)


def _predict_command(args: list[str], stdout: str, live: Live) -> None:
    """``predict --json``: the document ``POST /predict`` gives for the same texts and heads, and each
    head's scores those of its file on the ``/embed`` vectors (tests/support/heads.py)."""
    assert "--json" in args, "predict without --json prints a table: give this check a reader for it"
    texts = _texts(args)
    doc = json.loads(stdout)
    heads = [h["name"] for h in doc["heads"]]
    assert heads == (_option(args, "--task") or sorted(heads)), heads
    served = live.post("/predict", {"inputs": texts, "tasks": heads})
    assert [h["digest"] for h in served["heads"]] == [h["digest"] for h in doc["heads"]]
    check_predictions(doc, texts, live.folder("heads"), live.post("/embed", predict_embed_body(doc, texts)))


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
    assert done.returncode == 0, report(example, done, "the tests failed")
    assert re.search(r"\b\d+ passed\b", done.stdout), report(example, done, "no passed tests")


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
    assert done.returncode == 0, report(example, done, "the block failed")
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
