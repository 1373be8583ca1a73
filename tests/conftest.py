"""Test configuration. Fixtures live in tests/support/fixtures.py (registered below); helpers in the
tests/support package (import them from there, never from this file). See README "Tests"."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests build the torch backend unless they ask for onnx: the default `auto` would export ONNX on
# the first start of every test server. The auto rule itself is tested in test_backend_choice.py.
os.environ.setdefault("PREFIX_EMBED_BACKEND", "torch")

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _background_onnx_work_lands() -> Iterator[None]:
    """A background ONNX export or lone-session open left by a test must not overlap the next test
    (torch.export's global tracing state broke a later test's eager calls: KeyError 'custom')."""
    yield
    for thread in threading.enumerate():
        if thread.name.startswith(("onnx-export-", "onnx-lone-session")):
            thread.join(120)
