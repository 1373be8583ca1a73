"""Serving never imports the research code (service.method): issue 14, item 4."""

from __future__ import annotations

import subprocess
import sys


def test_the_app_and_the_registry_load_without_service_method() -> None:
    code = (
        "import sys, service.app, service.runtime, service.api.prefixes, service.registry.registry, "
        "service.registry.watcher, service.registry.similarity\n"
        "bad = sorted(m for m in sys.modules if m == 'service.method' or m.startswith('service.method.'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_the_app_does_not_import_the_transformers_modeling_stack() -> None:
    """An ONNX server needs only the tokenizer and the config: transformers' modeling code and what it
    pulls in (scipy, accelerate, sympy; ~130 MB resident) load only where a torch model is built."""
    code = (
        "import sys, service.app, service.backend, service.engine.onnx_encoder, service.engine.forward\n"
        "heavy = ('transformers.modeling_utils', 'scipy', 'accelerate', 'sympy')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""
