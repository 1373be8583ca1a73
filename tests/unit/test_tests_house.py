"""The tests' own house rules, read from the source (issue 20 item 7): tests use public seams (no
``._private`` attribute of another object, no private name patched or imported), synchronise by
waiting on a condition (no sleep), and start servers through the one launcher; ``free_port`` and
``wait_until`` exist once in the tree."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
OWN = {"self", "cls"}  # a class may read its own private state
NAME_ARGS = {"setattr", "getattr", "hasattr", "delattr"}  # builtins and monkeypatch's methods


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def parsed(folder: str) -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted((REPO / folder).rglob("*.py"))]


def sources(*folders: str) -> Iterator[tuple[Path, ast.Module]]:
    for folder in folders:
        yield from parsed(folder)


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"


def private_reads(path: Path, tree: ast.Module) -> Iterator[str]:
    """``x._name`` (x not self/cls), ``setattr(x, "_name", ...)`` and the like, a patched dotted path
    with a private part (``"service.a._b"``), and ``from service... import _name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in OWN):
                yield f"{where(path, node)} reads {ast.unparse(node)}"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            strings = [
                a.value for a in node.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
            if name in NAME_ARGS and any(private(part) for s in strings for part in s.split(".")):
                yield f"{where(path, node)} names a private attribute: {ast.unparse(node)[:100]}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("service"):
            for alias in node.names:
                if private(alias.name):
                    yield f"{where(path, node)} imports {node.module}.{alias.name}"


def sleeps(path: Path, tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sleep":
            yield f"{where(path, node)} sleeps: {ast.unparse(node)} (wait on a condition: tests/support/waiting.py)"


def test_tests_read_no_private_attribute() -> None:
    found = [line for path, tree in sources("tests") for line in private_reads(path, tree)]
    assert found == [], "give the code a public seam instead:\n" + "\n".join(found)


def test_tests_never_sleep_to_synchronise() -> None:
    found = [line for path, tree in sources("tests") for line in sleeps(path, tree)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("name", ["free_port", "wait_until", "async_wait_until"])
def test_one_definition_in_the_tree(name: str) -> None:
    defined = [
        where(path, node)
        for path, tree in sources("service", "tests", "scripts")
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    ]
    assert len(defined) == 1, f"{name} defined {len(defined)} times: {defined}"


def test_processes_start_only_through_the_launcher() -> None:
    """``subprocess.Popen`` (a process that outlives the call) in the service and the tests only in
    service/procs.py (scripts may run a build or a tool that way; their servers use the launcher too)."""
    found = [
        where(path, node)
        for path, tree in sources("service", "tests")
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "Popen" and path != REPO / "service" / "procs.py"
    ]
    assert found == [], f"start servers with service.procs.ServerProcess: {found}"


def test_the_check_finds_what_it_forbids() -> None:
    """The rules above can fail: each form is caught in a sample."""
    sample = ast.parse(
        "from service.x import _hidden\n"
        "batcher._worker\n"
        "self._own\n"
        "mp.setattr(enc, '_to_device', f)\n"
        "mp.setattr('service.engine.onnx_export._trace', f)\n"
        "mp.setattr(enc, 'public', f)\n"
        "time.sleep(0.1)\n"
    )
    path = TESTS / "sample.py"
    lines = sorted(line.split(" ", 1)[0] for line in private_reads(path, sample))
    assert lines == [f"tests/sample.py:{n}" for n in (1, 2, 4, 5)]
    assert [line.split(" ", 1)[0] for line in sleeps(path, sample)] == ["tests/sample.py:7"]
