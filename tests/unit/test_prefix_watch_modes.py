"""Issue 12 item 3: the watcher's polling mode (network filesystems send no inotify events)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from service.config import Settings
from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from service.registry.watcher import NETWORK_FILESYSTEMS, FolderWatcher, filesystem_type, use_polling
from tests.api_fake_encoder import FAKE_SPEC
from tests.http_helpers import fake_prefix_bytes, fill_folder


def _picked_up(folder: Path, **watch: object) -> tuple[bool, bool]:
    """Drop a file into a watched folder: (polling used, the file was published)."""
    registry = PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(settle_s=0))
    registry.load()

    async def scenario() -> tuple[bool, bool]:
        watcher = FolderWatcher(registry, debounce_ms=50, **watch)  # type: ignore[arg-type]
        watcher.start()
        try:
            deadline = time.monotonic() + 10
            while watcher.refreshes == 0 and time.monotonic() < deadline:  # the watcher's own first scan
                await asyncio.sleep(0.02)
            (folder / "delta.safetensors").write_bytes(fake_prefix_bytes(seed=3))
            while "delta" not in registry.snapshot.bank.names and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return watcher.polling, "delta" in registry.snapshot.bank.names
        finally:
            await watcher.stop()

    return asyncio.run(scenario())


def test_a_dropped_file_is_picked_up_in_poll_mode(tmp_path: Path) -> None:
    assert _picked_up(fill_folder(tmp_path / "p"), mode="poll", poll_ms=50) == (True, True)


def test_a_dropped_file_is_picked_up_in_native_mode(tmp_path: Path) -> None:
    assert _picked_up(fill_folder(tmp_path / "p"), mode="native") == (False, True)


def test_auto_polls_on_a_network_filesystem_only(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    share = str(tmp_path / "my share").replace(" ", "\\040")  # /proc/mounts escapes spaces
    mounts.write_text(
        "rootfs / ext4 rw 0 0\n"
        f"server:/export {tmp_path / 'nfs'} nfs4 rw,relatime 0 0\n"
        f"//host/share {share} cifs rw 0 0\n"
    )
    (tmp_path / "nfs" / "prefixes").mkdir(parents=True)
    (tmp_path / "my share").mkdir()
    assert filesystem_type(tmp_path / "nfs" / "prefixes", str(mounts)) == "nfs4"
    assert filesystem_type(tmp_path / "my share", str(mounts)) == "cifs"
    assert filesystem_type(tmp_path / "nfsother", str(mounts)) == "ext4"  # a prefix of the name is not enough
    assert {"nfs4", "cifs"} <= NETWORK_FILESYSTEMS
    assert use_polling("poll", tmp_path) is True
    assert use_polling("native", tmp_path) is False
    assert use_polling("auto", tmp_path) is (filesystem_type(tmp_path) in NETWORK_FILESYSTEMS)


def test_watch_mode_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX_EMBED_WATCH_MODE", "poll")
    monkeypatch.setenv("PREFIX_EMBED_WATCH_POLL_MS", "250")
    s = Settings()
    assert (s.watch_mode, s.watch_poll_ms) == ("poll", 250)
    monkeypatch.setenv("PREFIX_EMBED_WATCH_MODE", "inotify")
    with pytest.raises(ValueError, match="watch_mode"):
        Settings()
