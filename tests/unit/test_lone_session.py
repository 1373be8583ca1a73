"""The adaptive call plan's lone-call session (service/engine/onnx_depths.py ``DepthSessions``): opened
on the first call that runs alone, in the background, while that call and any other until it is open
run on the shared session; never opened by calls side by side; a failed opening is kept, not retried."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service.engine.onnx_depths import DepthSessions, DepthSet

SHARED, LONE = "shared session", "lone session"


class Opener:
    """Counts its calls; each one waits for ``release`` (so a test sees the opening in flight)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.fail = fail

    def __call__(self) -> str:
        self.calls += 1
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("no memory for a second session")
        return LONE


def test_calls_side_by_side_never_open_the_lone_session() -> None:
    opener = Opener()
    sessions = DepthSessions(Path("d0.onnx"), SHARED, opener)
    assert [sessions.pick(False) for _ in range(5)] == [SHARED] * 5
    sessions.wait()
    assert opener.calls == 0
    assert not sessions.lone_open


def test_first_lone_call_opens_it_in_the_background_and_runs_on_the_shared_one() -> None:
    opener = Opener()
    sessions = DepthSessions(Path("d0.onnx"), SHARED, opener)
    assert sessions.pick(True) == SHARED  # no call waits on the opening
    assert sessions.pick(True) == SHARED  # still opening: the shared one again, one opening only
    assert not sessions.lone_open
    opener.release.set()
    sessions.wait()
    assert sessions.lone_open
    assert sessions.pick(True) == LONE
    assert sessions.pick(False) == SHARED  # side by side: the shared session still
    assert opener.calls == 1


def test_a_failed_opening_keeps_the_shared_session_and_is_not_retried() -> None:
    opener = Opener(fail=True)
    opener.release.set()
    sessions = DepthSessions(Path("d0.onnx"), SHARED, opener)
    assert sessions.pick(True) == SHARED
    sessions.wait()
    assert sessions.lone_failure == "RuntimeError: no memory for a second session"
    assert [sessions.pick(True) for _ in range(3)] == [SHARED] * 3
    assert opener.calls == 1


def test_without_a_lone_session_every_call_is_shared() -> None:
    sessions = DepthSessions(Path("d0.onnx"), SHARED)  # a fixed plan, or CUDA
    assert sessions.pick(True) == SHARED
    assert not sessions.lone_open


@pytest.mark.parametrize("alone", [False, True])
def test_depth_set_lists_the_depths_whose_lone_session_is_open(alone: bool) -> None:
    openers = {d: Opener() for d in (0, 3)}
    for opener in openers.values():
        opener.release.set()
    depths = DepthSet(
        DepthSessions(Path("d0.onnx"), SHARED, openers[0]),
        lambda d: DepthSessions(Path(f"d{d}.onnx"), SHARED, openers[d]),
    )
    assert depths.usable(3) == 0  # depth 3 exports in the background
    depths.wait()
    assert depths.depths == [0, 3]
    assert depths.lone_depths == []
    depths[3].pick(alone)
    depths.wait()  # waits for the lone session being opened too
    assert depths.lone_depths == ([3] if alone else [])
    assert (openers[0].calls, openers[3].calls) == (0, int(alone))
