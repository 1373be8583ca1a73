"""The rule of ``backend: auto`` (service/backend.py), as a rule: which backend per device,
dtype and install, and that an explicit choice or the environment variable wins."""

from __future__ import annotations

import pytest

from service.backend import choose_backend
from service.config import Settings


@pytest.mark.parametrize(
    ("requested", "device", "dtype", "ort", "backend", "why"),
    [
        ("auto", "cpu", "auto", True, "onnx", "onnx on CPU"),
        ("auto", "cpu", "float32", True, "onnx", "onnx on CPU"),
        ("auto", "cpu", "auto", False, "torch", "ONNX Runtime is not installed"),
        ("auto", "cpu", "bfloat16", True, "torch", "dtype bfloat16"),
        ("auto", "cuda", "auto", True, "torch", "torch on CUDA"),
        ("auto", "cuda:1", "float16", True, "torch", "torch on CUDA"),
        ("torch", "cpu", "auto", True, "torch", "set explicitly"),
        ("onnx", "cuda", "auto", True, "onnx", "set explicitly"),
    ],
)
def test_auto_rule_per_device(
    requested: str, device: str, dtype: str, ort: bool, backend: str, why: str
) -> None:
    choice = choose_backend(requested, device, dtype, ort_installed=ort)
    assert choice.backend == backend
    assert why in choice.reason


def test_default_is_auto_and_the_environment_or_a_flag_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFIX_EMBED_BACKEND", raising=False)
    assert Settings().backend == "auto"
    monkeypatch.setenv("PREFIX_EMBED_BACKEND", "onnx")
    assert Settings().backend == "onnx"
    assert Settings(backend="torch").backend == "torch"
