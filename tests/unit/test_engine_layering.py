"""The engine is the bottom floor: no module under ``service/engine/`` imports anything above it
(settings, the API, the runtime, the registry, ...), only other engine modules and the error types
(issue 20, item 4). Read from the source, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import service.engine

ENGINE = Path(service.engine.__file__).parent
ALLOWED = ("service.engine", "service.errors")


def service_imports(path: Path, package: str = "service.engine") -> list[tuple[int, str]]:
    """(line, module) of every ``service.*`` import in ``path`` (a module of ``package``), at any
    depth of the module; relative imports are resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
    return [(line, m) for line, m in found if m == "service" or m.startswith("service.")]


def allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def test_no_engine_module_imports_above_the_engine() -> None:
    modules = sorted(ENGINE.rglob("*.py"))
    assert len(modules) > 5, f"no engine modules found under {ENGINE}"
    upward = [
        f"{path.relative_to(ENGINE.parent.parent)}:{line} imports {module}"
        for path in modules
        for line, module in service_imports(path)
        if not allowed(module)
    ]
    assert upward == []


def test_the_check_sees_lazy_and_upward_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from service.engine.bank import PrefixBank\n"
        "def f():\n"
        "    from service.config import Settings\n"
        "    import service.api.deps, service.runtime\n"
        "from . import pooling\n"
        "from ..registry import limits\n"
    )
    found = sorted(m for _, m in service_imports(probe) if not allowed(m))
    assert found == ["service.api.deps", "service.config", "service.registry", "service.runtime"]
