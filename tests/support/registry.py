"""A prefix registry on a clock the test moves: settle windows pass without waiting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from tests.support.fake_encoder import FAKE_SPEC


class ManualClock:
    """A monotonic clock that moves only when told (``advance``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def clocked_registry(folder: Path, **limits: Any) -> tuple[PrefixRegistry, ManualClock]:
    """A loaded registry of ``folder`` for the fake encoder's spec, with ``PrefixLimits(**limits)``."""
    clock = ManualClock(100.0)
    registry = PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(**limits), clock=clock)
    registry.load()
    return registry, clock
