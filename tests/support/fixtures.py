"""The shared pytest fixtures (a plugin: ``pytest_plugins`` in tests/conftest.py registers it).

Models: ``minilm_path``/``minilm`` (the default model), ``tiny_bert_path``/``tiny_bert``,
``tiny_roberta_path`` and ``tiny_mpnet_path``/``tiny_mpnet`` (random weights, seconds to load).
Files: ``write_prefix``. Fakes: ``fake_encoder``. Processes: ``server_process`` (started servers are
stopped at teardown). A newcomer's checkout: ``serve_install`` (a clone of HEAD with ``make
install``, once per session).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.config import default_model_path
from service.engine.backbone import Backbone, load_backbone
from tests.support import prefixes
from tests.support.fake_encoder import FakeEncoder
from tests.support.install import ServeInstall, clone_and_install
from tests.support.models import save_tiny
from tests.support.server_process import ServerProcess, serve_process

TESTS = Path(__file__).resolve().parents[1]
# What a unit test may not use: a real model (loading one) or a real server process.
NOT_IN_UNIT = frozenset(
    {
        "minilm",
        "minilm_path",
        "tiny_bert",
        "tiny_bert_path",
        "tiny_roberta_path",
    }
)


def tier(item: pytest.Item) -> str:
    """``unit``, ``integration`` or ``e2e``: the folder under tests/ that holds the test."""
    try:
        return item.path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    gpu = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if tier(item) == "e2e":  # real server processes: always slow
            item.add_marker(pytest.mark.slow)
        # the marker, not `"gpu" in item.keywords`: keywords also hold parametrize ids such as "gpu"
        if not gpu and item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A unit test that asks for a real model or server fails (before loading it) with where it belongs."""
    used = NOT_IN_UNIT.intersection(getattr(item, "fixturenames", ()))
    if tier(item) == "unit" and used:
        pytest.fail(
            f"unit tests load no real model and start no server ({', '.join(sorted(used))}): "
            "move this test to tests/integration (in-process, real model) or tests/e2e (server process)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> Backbone:
    return load_backbone(minilm_path, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-bert"), "bert", minilm_path)


@pytest.fixture(scope="session")
def tiny_roberta_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-roberta"), "roberta", minilm_path)


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_path: Path) -> Backbone:
    return load_backbone(tiny_bert_path, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_mpnet_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-mpnet"), "mpnet", minilm_path)


@pytest.fixture(scope="session")
def tiny_mpnet(tiny_mpnet_path: Path) -> Backbone:
    return load_backbone(tiny_mpnet_path, device="cpu", dtype="float32")


@pytest.fixture
def write_prefix() -> Callable[..., Path]:
    """write_prefix(folder, name, spec, prefix_len=4, seed=0, **metadata) -> path of a native prefix file."""
    return prefixes.write_prefix


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    """A fresh :class:`FakeEncoder` (the fake spec, 32 input tokens)."""
    return FakeEncoder()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """server_process(*serve_args, env=None, name="server") -> a started ServerProcess (not yet ready:
    call ``.wait_ready()``, so that several can load at once). Each is stopped at teardown, gracefully
    if still running."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "server") -> ServerProcess:
        proc = serve_process(tmp_path / f"{name}-{len(started)}.log", *args, env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.running():
            proc.terminate()
            try:
                proc.wait_exit()
            finally:
                proc.kill()


@pytest.fixture(scope="session")
def serve_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstall]:
    """A ``git clone`` of HEAD with ``make install`` (the serve install) into its ``.venv``: made once
    per session, for every test that checks what a newcomer gets (tests/support/install.py)."""
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("checks the install of a machine without a GPU (with one, pip's CUDA build of torch)")
    folder = tmp_path_factory.mktemp("newcomer")
    yield clone_and_install(folder / "prefix-embed")
    shutil.rmtree(folder, ignore_errors=True)  # ~1.8 GB (a venv with torch): not kept past the session


@pytest.fixture
def count_exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every call of the real ONNX export function, by target path."""
    from service.engine import onnx_export

    calls: list[Path] = []
    real = onnx_export.export_onnx

    def counting(model_path: Path, target: Path, key: onnx_export.ExportKey) -> onnx_export.ExportResult:
        calls.append(target)
        return real(model_path, target, key)

    monkeypatch.setattr(onnx_export, "export_onnx", counting)
    return calls
