"""Test configuration. Fixtures live in tests/support/fixtures.py (registered below); helpers in the
tests/support package (import them from there, never from this file). See README "Tests"."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests build the torch backend unless they ask for onnx: the default `auto` would export ONNX on
# the first start of every test server. The auto rule itself is tested in test_backend_choice.py.
os.environ.setdefault("PREFIX_EMBED_BACKEND", "torch")

pytest_plugins = ["tests.support.fixtures"]
