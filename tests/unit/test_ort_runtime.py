"""ONNX Runtime plumbing: one distribution per environment, providers asked for and really used."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

import onnxruntime as ort
import pytest

from service.engine import ort_runtime
from service.engine.ort_runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    active_device,
    check_ort_install,
    installed_ort_distributions,
    requested_providers,
    session_options,
)
from service.errors import ModelLoadError


def test_this_environment_has_exactly_one_onnxruntime() -> None:
    found = installed_ort_distributions()
    assert len(found) == 1, f"install exactly one of onnxruntime / onnxruntime-gpu, found {found}"
    assert found[0].split("==")[1] == ort.__version__


def _fake_versions(monkeypatch: pytest.MonkeyPatch, installed: dict[str, str]) -> None:
    def version(name: str) -> str:
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(ort_runtime.metadata, "version", version)


def test_both_distributions_warn(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fake_versions(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})
    with caplog.at_level(logging.WARNING, logger=ort_runtime.__name__):
        found = check_ort_install()
    assert found == ["onnxruntime==1.31.1", "onnxruntime-gpu==1.31.1"]
    assert "both onnxruntime==1.31.1 and onnxruntime-gpu==1.31.1 are installed" in caplog.text


def test_one_distribution_is_quiet(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _fake_versions(monkeypatch, {"onnxruntime-gpu": "1.31.1"})
    with caplog.at_level(logging.WARNING, logger=ort_runtime.__name__):
        assert check_ort_install() == ["onnxruntime-gpu==1.31.1"]
    assert caplog.text == ""


def test_no_distribution_is_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_versions(monkeypatch, {})
    with pytest.raises(ModelLoadError, match="install the cpu extra"):
        check_ort_install()


def test_requested_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert requested_providers("cpu") == [CPU_PROVIDER]
    assert requested_providers("cuda:1") == [(CUDA_PROVIDER, {"device_id": 1}), CPU_PROVIDER]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU_PROVIDER])
    assert requested_providers("auto") == [CPU_PROVIDER]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    assert requested_providers("auto") == [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER]
    with pytest.raises(ModelLoadError, match="not supported by the onnx backend"):
        requested_providers("mps")


class FakeSession:
    def __init__(self, providers: list[str], options: dict[str, dict[str, Any]] | None = None) -> None:
        self._providers, self._options = providers, options or {}

    def get_providers(self) -> list[str]:
        return self._providers

    def get_provider_options(self) -> dict[str, dict[str, Any]]:
        return self._options


def test_active_device_is_what_the_session_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    cuda = FakeSession([CUDA_PROVIDER, CPU_PROVIDER], {CUDA_PROVIDER: {"device_id": "1"}})
    assert active_device(cuda, "auto", []) == ("cuda:1", "cuda", 1)
    cpu = FakeSession([CPU_PROVIDER])
    assert active_device(cpu, "cpu", [CPU_PROVIDER]) == ("cpu", "cpu", 0)
    with caplog.at_level(logging.WARNING, logger=ort_runtime.__name__):
        assert active_device(cpu, "auto", [(CUDA_PROVIDER, {}), CPU_PROVIDER]) == ("cpu", "cpu", 0)
    assert "could not start the CUDA provider" in caplog.text
    with pytest.raises(ModelLoadError, match="'cuda' requested but ONNX Runtime runs on"):
        active_device(cpu, "cuda", [(CUDA_PROVIDER, {}), CPU_PROVIDER])


def test_session_options_do_not_spin_by_default() -> None:
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(2, spinning=True)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.intra_op_num_threads == 2
