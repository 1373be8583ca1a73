"""Test configuration. Fixtures live in tests/support/fixtures.py (registered below); helpers in the
tests/support package (import them from there, never from this file). See README "Tests"."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.support.fixtures"]
