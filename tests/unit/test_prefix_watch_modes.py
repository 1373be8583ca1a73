"""Issue 12 item 3: the watcher's polling mode (network filesystems send no inotify events)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import torch

from service.config import Settings
from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from service.registry.watcher import NETWORK_FILESYSTEMS, FolderWatcher, filesystem_type, use_polling
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import fake_prefix_bytes, fill_folder
from tests.support.waiting import async_wait_until
from tests.support.watching import until_watching


def _picked_up(folder: Path, **watch: object) -> tuple[bool, bool]:
    """Drop a file into a watched folder: (polling used, the file was published)."""
    registry = PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(settle_s=0))
    registry.load()

    async def scenario() -> tuple[bool, bool]:
        watcher = FolderWatcher(registry, debounce_ms=50, **watch)  # type: ignore[arg-type]
        watcher.start()
        try:
            await until_watching(watcher, folder)
            (folder / "delta.safetensors").write_bytes(fake_prefix_bytes(seed=3))
            published = lambda: "delta" in registry.snapshot.bank.names  # noqa: E731
            with contextlib.suppress(AssertionError):  # not published in time: reported below
                await async_wait_until(published, what="delta published")
            return watcher.polling, published()
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


def test_a_file_without_checksum_is_loaded_when_its_settle_window_ends(tmp_path: Path) -> None:
    """No event follows the end of a write: the watcher itself looks again when the window ends."""
    from safetensors.torch import save as st_save

    folder = fill_folder(tmp_path / "p")
    registry = PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(settle_s=0.3, require_checksum=False))
    registry.load()
    shape = (FAKE_SPEC.num_layers, FAKE_SPEC.num_heads, 4, FAKE_SPEC.head_dim)
    key, value = torch.randn(shape), torch.randn(shape)
    data = st_save({"key": key, "value": value}, metadata={"backbone_fingerprint": FAKE_SPEC.fingerprint})

    async def scenario() -> bool:
        watcher = FolderWatcher(registry, debounce_ms=20, mode="native")
        watcher.start()
        try:
            await until_watching(watcher, folder)
            (folder / "late.safetensors").write_bytes(data)
            with contextlib.suppress(AssertionError):  # not published in time: asserted below
                await async_wait_until(lambda: "late" in registry.snapshot.bank.names, what="late published")
            return "late" in registry.snapshot.bank.names
        finally:
            await watcher.stop()

    assert asyncio.run(scenario())
    assert registry.snapshot.rejected == ()


def _toggles_seen(folder: Path, reconcile_ms: int) -> list[bool]:
    """Replica A toggles one prefix 4 times, quickly (the state file's size repeats within one second);
    does replica B, polling, see each state?"""
    a = PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(settle_s=0))
    b = PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(settle_s=0))
    a.load()
    b.load()
    name = sorted(n for n in b.snapshot.bank.names if n != "base")[0]

    async def scenario() -> list[bool]:
        watcher = FolderWatcher(b, debounce_ms=20, mode="poll", poll_ms=50, reconcile_ms=reconcile_ms)
        watcher.start()
        seen = []
        try:
            await until_watching(watcher, folder)
            for enabled in (False, True, False, True):
                a.apply_patch({name: {"enabled": enabled}})
                in_step = lambda want=enabled: (name in b.snapshot.enabled) is want  # noqa: E731
                with contextlib.suppress(AssertionError):
                    await async_wait_until(in_step, timeout=3, what="replica B in step")
                seen.append(in_step())
        finally:
            await watcher.stop()
        return seen

    return asyncio.run(scenario())


def test_a_polling_replica_sees_every_toggle_of_the_state_file(tmp_path: Path) -> None:
    """Polling compares timestamps and sizes: the third toggle rewrites the state file with the size
    of the first within the filesystem's granularity and sends no event. The periodic re-scan
    (``watch_reconcile_ms``) keeps the replica in step anyway."""
    assert _toggles_seen(fill_folder(tmp_path / "p"), reconcile_ms=300) == [True] * 4
