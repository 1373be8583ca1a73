"""Issue 23 item 1: the state file and its lock follow the one file rule (regular files only, never a
link, never blocking), and a broken state never silently re-enables a prefix. Issue 22 item 4: the
state can live in its own folder, and what the service writes is created with the umask."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import assert_error, fake_app, fake_prefix_bytes, fill_folder
from tests.support.waiting import in_thread

Special = Callable[[Path, Path], None]


def _chardev(path: Path, _outside: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # the device /dev/zero is
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")


def _outside_file(path: Path, outside: Path) -> None:
    target = outside / path.name
    target.write_text(json.dumps({"version": 1, "disabled": []}))
    path.symlink_to(target)


SPECIALS: dict[str, Special] = {
    "fifo": lambda path, _: os.mkfifo(path),
    "symlink-to-dev-zero": lambda path, _: path.symlink_to("/dev/zero"),
    "symlink-out-of-folder": _outside_file,
    "dangling-symlink-out-of-folder": lambda path, outside: path.symlink_to(outside / "new-file"),
    "char-device": _chardev,
}
WHAT = {
    "fifo": "a FIFO, not a regular file",
    "symlink-to-dev-zero": "a symlink, not a regular file",
    "symlink-out-of-folder": "a symlink, not a regular file",
    "dangling-symlink-out-of-folder": "a symlink, not a regular file",
    "char-device": "a character device, not a regular file",
}


def _rejected(client: object) -> dict[str, str]:
    doc = client.get("/prefixes").json()  # type: ignore[attr-defined]
    return {r["source"]: r["reason"] for r in doc["rejected"]}


def _enabled(client: object) -> list[str]:
    doc = client.get("/prefixes").json()  # type: ignore[attr-defined]
    return [p["name"] for p in doc["prefixes"] if p["enabled"] and p["kind"] != "builtin"]


@pytest.mark.parametrize("kind", SPECIALS)
def test_a_special_lock_file_fails_a_patch_at_once_and_blocks_nothing_else(kind: str, tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    outside = tmp_path / "outside"
    outside.mkdir()
    SPECIALS[kind](folder / ".state.lock", outside)
    outside_before = sorted(os.listdir(outside))
    with fake_app(folder, prefix_settle_ms=0) as (client, _, runtime):
        r = in_thread(lambda: client.patch("/prefixes/beta", json={"enabled": False}), 20, "PATCH")
        assert_error(r, 503, "prefix_store_unwritable", ".state.lock", WHAT[kind], "nothing was changed")
        assert not (folder / "state.json").exists()
        assert _enabled(client) == ["alpha", "beta", "gamma"]
        # uploads and hot-loading go on (they used to queue behind the PATCH blocked in open())
        r = in_thread(lambda: client.put("/prefixes/delta", content=fake_prefix_bytes(seed=4)), 20, "PUT")
        assert r.status_code == 201, r.text
        (folder / "epsilon.safetensors").write_bytes(fake_prefix_bytes(seed=5))
        in_thread(runtime.registry.refresh, 20, "refresh")  # type: ignore[union-attr]
        assert _enabled(client) == ["alpha", "beta", "delta", "epsilon", "gamma"]
        assert sorted(os.listdir(outside)) == outside_before  # nothing created or written out there
    assert stat.S_IFMT((folder / ".state.lock").lstat().st_mode) != stat.S_IFREG  # left as it was


@pytest.mark.parametrize("kind", SPECIALS)
def test_a_special_state_file_at_a_cold_start_disables_everything_and_says_why(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    outside = tmp_path / "outside"
    outside.mkdir()
    SPECIALS[kind](folder / "state.json", outside)
    with caplog.at_level(logging.ERROR), fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        reason = _rejected(client)["state.json"]
        assert WHAT[kind] in reason
        assert "every prefix is disabled" in reason
        assert _enabled(client) == []
        doc = client.get("/prefixes").json()
        assert all("state file is broken" in p["disabled_reason"] for p in doc["prefixes"][1:])
        assert client.get("/info").json()["state"]["error"] == reason
        assert any(WHAT[kind] in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
        # a PATCH repairs it: the rename replaces the special file, never writes through it
        r = client.patch("/prefixes", json={"alpha": {"enabled": True}, "gamma": {"enabled": True}})
        assert r.status_code == 200, r.text
        assert stat.S_ISREG((folder / "state.json").lstat().st_mode)
        assert json.loads((folder / "state.json").read_text())["disabled"] == ["beta"]
        assert _enabled(client) == ["alpha", "gamma"]
        assert "state.json" not in _rejected(client)
        assert client.get("/info").json()["state"]["error"] is None
    if kind == "symlink-out-of-folder":
        assert json.loads((outside / "state.json").read_text())["disabled"] == []  # untouched


@pytest.mark.parametrize("kind", SPECIALS)
def test_a_state_file_that_breaks_while_running_keeps_the_last_good_state(kind: str, tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    outside = tmp_path / "outside"
    outside.mkdir()
    with fake_app(folder, prefix_settle_ms=0) as (client, _, runtime):
        assert client.patch("/prefixes/beta", json={"enabled": False}).status_code == 200
        (folder / "state.json").unlink()
        SPECIALS[kind](folder / "state.json", outside)
        runtime.registry.refresh()  # type: ignore[union-attr]
        reason = _rejected(client)["state.json"]
        assert WHAT[kind] in reason
        assert "keeping the last good state (1 disabled)" in reason
        assert _enabled(client) == ["alpha", "gamma"]  # beta was NOT re-enabled
        # a PATCH starts from the state in force, not from "nothing disabled"
        assert client.patch("/prefixes/alpha", json={"enabled": False}).status_code == 200
        assert json.loads((folder / "state.json").read_text())["disabled"] == ["alpha", "beta"]


def test_a_hand_edit_that_breaks_the_checksum_is_reported_and_a_hand_written_file_is_taken(
    tmp_path: Path,
) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    registry = PrefixRegistry(folder, FAKE_SPEC)
    registry.load()
    registry.apply_patch({"beta": {"enabled": False}})
    doc = json.loads((folder / "state.json").read_text())
    assert len(doc["content_sha256"]) == 64  # our writer records it
    doc["disabled"] = []  # edited, checksum kept: a torn or altered file
    (folder / "state.json").write_text(json.dumps(doc))
    snap = registry.refresh()
    assert "content_sha256 does not match" in {r.source: r.reason for r in snap.rejected}["state.json"]
    assert "beta" not in snap.enabled
    (folder / "state.json").write_text('{"disabled": ["gamma"]}')  # by hand, without a checksum
    snap = registry.refresh()
    assert snap.rejected == ()
    assert sorted(snap.enabled) == ["alpha", "base", "beta"]


def test_the_state_can_live_in_its_own_folder_and_replicas_converge_there(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    state_dir = tmp_path / "state"
    one = PrefixRegistry(folder, FAKE_SPEC, state_dir=state_dir)
    two = PrefixRegistry(folder, FAKE_SPEC, state_dir=state_dir)
    one.load()
    two.load()
    one.apply_patch({"alpha": {"enabled": False}})
    assert sorted(os.listdir(folder)) == ["alpha.safetensors", "beta.safetensors", "gamma.safetensors"]
    assert sorted(os.listdir(state_dir)) == [".state.lock", "state.json"]
    assert "alpha" not in two.refresh().enabled


def test_files_the_service_writes_follow_the_umask(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    old = os.umask(0o022)
    try:
        with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
            assert client.put("/prefixes/delta", content=fake_prefix_bytes(seed=4)).status_code == 201
            assert client.patch("/prefixes/beta", json={"enabled": False}).status_code == 200
        for name in ("delta.safetensors", "state.json", ".state.lock"):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name  # was 0600 (mkstemp)
    finally:
        os.umask(old)


def test_the_shipped_prefix_folder_ignores_the_runtime_state_in_git() -> None:
    repo = Path(__file__).resolve().parents[2]
    ignored = (repo / "prefixes" / ".gitignore").read_text().split()
    assert {"state.json", ".state.lock", ".*.tmp"} <= set(ignored)


def test_the_settings_reach_the_registry(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, state_dir=tmp_path / "st", prefix_settle_ms=0) as (client, _, _):
        assert client.patch("/prefixes/beta", json={"enabled": False}).status_code == 200
        assert client.get("/info").json()["state"]["file"] == str(tmp_path / "st" / "state.json")
    assert (tmp_path / "st" / "state.json").exists()
    assert not (folder / "state.json").exists()
    assert PrefixLimits().require_checksum  # on by default
