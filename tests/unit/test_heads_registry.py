"""Heads in the prefix registry: loaded in the same snapshot as the bank, unavailable (with the reason)
whenever an input prefix is missing, disabled or changed, a bad file rejected while the others serve,
the disabled heads persisted in the state file, and hot-loaded by the folder watcher."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from service.errors import HeadNotFound, InvalidHeadFile, InvalidInput
from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry, Snapshot
from service.registry.state import STATE_FILE, StateStore, state_checksum
from service.registry.watcher import FolderWatcher
from tests.support import prefixes
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.heads import inputs_of, random_head_bytes, write_random_head
from tests.support.waiting import async_wait_until
from tests.support.watching import until_watching


def make_registry(folder: Path) -> PrefixRegistry:
    return PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(max_file_bytes=1 << 20), pooling="mean")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i, name in enumerate(["alpha", "beta", "gamma"]):
        prefixes.write_prefix(tmp_path, name, FAKE_SPEC, seed=i)
    write_random_head(tmp_path, "spam", FAKE_SPEC, ["alpha"], ["ham", "spam"], activation="sigmoid")
    write_random_head(tmp_path, "topic", FAKE_SPEC, ["base", "alpha", "beta"], ["a", "b", "c"], seed=1)
    return tmp_path


def availability(snap: Snapshot) -> dict[str, str | None]:
    """Head name -> why it is unavailable (None: available)."""
    return {s.head.name: s.reason for s in snap.heads.heads}


def test_heads_load_with_the_bank_and_the_heads_folder_is_not_a_prefix(folder: Path) -> None:
    (folder / "heads" / "notes.md").write_text("not a head")
    snap = make_registry(folder).load()
    assert snap.bank.names == ["base", "alpha", "beta", "gamma"]
    assert snap.rejected == ()  # heads/ is not a PEFT folder
    assert availability(snap) == {"spam": None, "topic": None}
    assert snap.heads.get("topic").head.inputs == tuple(
        inputs_of(folder, ["base", "alpha", "beta"], FAKE_SPEC)
    )


def test_a_changed_missing_or_disabled_input_makes_the_head_unavailable_until_restored(folder: Path) -> None:
    reg = make_registry(folder)
    reg.load()
    original = (folder / "beta.safetensors").read_bytes()
    (folder / "beta.safetensors").write_bytes(prefixes.prefix_bytes(FAKE_SPEC, 4, seed=99))  # retrained
    reg.refresh()
    reason = availability(reg.snapshot)["topic"]
    assert reason is not None
    assert "input beta is at version" in reason
    assert "fitted on" in reason
    assert availability(reg.snapshot)["spam"] is None  # its input is untouched
    (folder / "beta.safetensors").write_bytes(original)
    reg.refresh()
    assert availability(reg.snapshot)["topic"] is None
    reg.apply_patch({"alpha": {"enabled": False}})
    assert availability(reg.snapshot) == {
        "spam": "input alpha is disabled (enable or restore those prefixes, or refit the head)",
        "topic": "input alpha is disabled (enable or restore those prefixes, or refit the head)",
    }
    reg.apply_patch({"alpha": {"enabled": True}})
    (folder / "alpha.safetensors").unlink()
    reg.refresh()
    assert (
        availability(reg.snapshot)["spam"]
        == "input alpha is not loaded (enable or restore those prefixes, or refit the head)"
    )
    assert not reg.snapshot.heads.get("spam").available


def test_a_bad_head_file_is_rejected_while_the_others_serve_and_a_broken_one_keeps_its_last_good(
    folder: Path,
) -> None:
    reg = make_registry(folder)
    good = reg.load().heads.get("spam").head
    (folder / "heads" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (folder / "heads" / "model.pt").write_bytes(b"PK\x03\x04")
    data = (folder / "heads" / "spam.safetensors").read_bytes()
    (folder / "heads" / "spam.safetensors").write_bytes(data[: len(data) // 2])  # a torn copy
    snap = reg.refresh()
    reasons = {r.source: r.reason for r in snap.heads.rejected}
    assert set(reasons) == {"heads/broken.safetensors", "heads/model.pt", "heads/spam.safetensors"}
    assert "not a valid safetensors file" in reasons["heads/broken.safetensors"]
    assert "pickle-based files are never loaded" in reasons["heads/model.pt"]
    spam = snap.heads.get("spam")
    assert spam.head is good
    assert spam.stale
    assert spam.available
    assert snap.heads.get("topic").available


def test_patch_persists_disabled_heads_beside_disabled_prefixes(folder: Path) -> None:
    reg = make_registry(folder)
    reg.load()
    reg.apply_patch({"gamma": {"enabled": False}})
    snap = reg.apply_head_patch({"spam": {"enabled": False}})
    assert not snap.heads.get("spam").enabled
    assert snap.heads.get("topic").enabled
    written = json.loads((folder / STATE_FILE).read_text())
    assert written == {
        "version": 1,
        "disabled": ["gamma"],
        "disabled_heads": ["spam"],
        "content_sha256": state_checksum(written),
    }
    again = make_registry(folder).load()  # a restart (or another replica) reads the same state
    assert not again.heads.get("spam").enabled
    assert "gamma" not in again.enabled
    with pytest.raises(HeadNotFound, match=r"unknown head\(s\) 'nope'; known heads: spam, topic"):
        reg.apply_head_patch({"nope": {"enabled": False}})
    with pytest.raises(InvalidInput, match="head 'spam': only 'enabled' can be changed"):
        reg.apply_head_patch({"spam": {"labels": []}})


def test_a_state_file_from_before_heads_still_reads(folder: Path) -> None:
    old = {"version": 1, "disabled": ["beta"]}
    (folder / STATE_FILE).write_text(json.dumps(old | {"content_sha256": state_checksum(old)}))
    read = StateStore(folder).read()
    assert read.error is None
    assert read.disabled == {"beta"}
    assert read.disabled_heads == frozenset()
    (folder / STATE_FILE).write_text('{"disabled": [], "disabled_heads": 3}')
    read = StateStore(folder).read()
    assert read.disabled is None
    assert read.disabled_heads is None
    assert "'disabled_heads' must be a list of names, got 3" in (read.error or "")


def test_a_broken_state_file_at_a_cold_start_disables_every_head_too(folder: Path) -> None:
    (folder / STATE_FILE).write_text("{not json")
    snap = make_registry(folder).load()
    assert snap.heads.names == ["spam", "topic"]
    assert not any(s.enabled for s in snap.heads.heads)


def test_put_validates_before_writing_and_delete_removes_the_file_and_its_state(folder: Path) -> None:
    reg = make_registry(folder)
    reg.load()
    with pytest.raises(InvalidHeadFile, match="heads/new.safetensors: empty file"):
        reg.put_head("new", b"")
    assert not (folder / "heads" / "new.safetensors").exists()
    data = random_head_bytes(FAKE_SPEC, inputs_of(folder, ["gamma"], FAKE_SPEC), ["x", "y", "z"])
    head, created = reg.put_head("new", data)
    assert created
    assert reg.snapshot.heads.get("new").head.digest == head.digest
    assert reg.put_head("new", data)[1] is False  # a replacement
    reg.apply_head_patch({"new": {"enabled": False}})
    snap = reg.delete_head("new")
    assert "new" not in snap.heads.names
    assert not (folder / "heads" / "new.safetensors").exists()
    assert StateStore(folder).read().disabled_heads == frozenset()
    with pytest.raises(HeadNotFound, match="unknown head 'new'"):
        reg.delete_head("new")


def test_a_head_fitted_on_another_pooling_is_unavailable(folder: Path) -> None:
    write_random_head(folder, "cls-head", FAKE_SPEC, ["alpha"], ["a", "b"], seed=4, pooling="cls")
    reg = make_registry(folder)
    reg.load()
    assert (
        availability(reg.snapshot)["cls-head"]
        == "fitted on 'cls' pooling; this server pools 'mean' (enable or restore those prefixes, or refit the head)"
    )


def test_the_watcher_hot_loads_head_files(folder: Path) -> None:
    async def scenario() -> None:
        reg = make_registry(folder)
        reg.load()
        watcher = FolderWatcher(reg, debounce_ms=50, step_ms=20)
        watcher.start()
        try:
            await until_watching(watcher, folder / "heads")
            write_random_head(folder, "late", FAKE_SPEC, ["gamma"], ["p", "q"], seed=5)
            await async_wait_until(lambda: "late" in reg.snapshot.heads.names, 10, "the new head is served")
            (folder / "heads" / "late.safetensors").unlink()
            await async_wait_until(lambda: "late" not in reg.snapshot.heads.names, 10, "the head is gone")
        finally:
            await watcher.stop()

    asyncio.run(scenario())
