"""Serving never imports the research code (service.method): issue 14, item 4."""

from __future__ import annotations

from tests.support.imports import loaded_after


def test_the_app_and_the_registry_load_without_service_method() -> None:
    serving = (
        "service.app, service.runtime, service.api.prefixes, service.registry.registry, "
        "service.registry.watcher, service.registry.similarity"
    )
    assert loaded_after(serving, "service.method") == []


def test_the_app_does_not_import_the_transformers_modeling_stack() -> None:
    """An ONNX server needs only the tokenizer and the config: transformers' modeling code and what it
    pulls in (scipy, accelerate, sympy; ~130 MB resident) load only where a torch model is built."""
    onnx_server = "service.app, service.backend, service.engine.onnx_encoder, service.engine.forward"
    heavy = ("transformers.modeling_utils", "scipy", "accelerate", "sympy")
    assert loaded_after(onnx_server, *heavy) == []
