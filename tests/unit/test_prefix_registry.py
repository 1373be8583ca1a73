"""PrefixRegistry: snapshots, keeping the last good version, PATCH, PUT, and the folder watcher."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from service.errors import InvalidInput, InvalidPrefixFile, PrefixConflict, PrefixNotFound
from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from service.registry.state import STATE_FILE, read_disabled
from service.registry.watcher import FolderWatcher
from tests.support import prefixes
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.waiting import async_wait_until
from tests.support.watching import until_watching

WritePrefix = Callable[..., Path]


def make_registry(folder: Path) -> PrefixRegistry:
    return PrefixRegistry(folder, FAKE_SPEC, PrefixLimits(max_prefix_len=16, max_file_bytes=1 << 20))


def prefix_bytes(seed: int = 0, prefix_len: int = 4) -> bytes:
    return prefixes.prefix_bytes(FAKE_SPEC, prefix_len, seed)


def write_peft(folder: Path, virtual_tokens: int = 4) -> None:
    """A PEFT PrefixTuning adapter folder for FAKE_SPEC."""
    folder.mkdir()
    cfg = {
        "peft_type": "PREFIX_TUNING",
        "num_layers": FAKE_SPEC.num_layers,
        "num_attention_heads": FAKE_SPEC.num_heads,
        "token_dim": FAKE_SPEC.hidden_size,
        "num_virtual_tokens": virtual_tokens,
    }
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    width = FAKE_SPEC.num_layers * 2 * FAKE_SPEC.hidden_size
    weights = torch.randn(virtual_tokens, width, generator=torch.Generator().manual_seed(1))
    (folder / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": weights}))


@pytest.fixture
def folder(tmp_path: Path, write_prefix: WritePrefix) -> Path:
    for i, name in enumerate(["alpha", "beta", "gamma"]):
        write_prefix(tmp_path, name, FAKE_SPEC, seed=i)
    return tmp_path


def test_load_publishes_every_valid_prefix_and_lists_rejected_files(folder: Path) -> None:
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (folder / "notes.md").write_text("documentation is not a prefix")
    snap = make_registry(folder).load()
    assert snap.bank.names == ["base", "alpha", "beta", "gamma"]  # the built-in first, then files
    assert snap.enabled == {"base", "alpha", "beta", "gamma"}
    assert [r.source for r in snap.rejected] == ["broken.safetensors"]
    assert "not a valid safetensors file" in snap.rejected[0].reason
    assert snap.version == 1


def test_a_file_turning_bad_keeps_its_previous_version_serving(folder: Path) -> None:
    reg = make_registry(folder)
    good = reg.load().bank.get("beta")
    data = (folder / "beta.safetensors").read_bytes()
    (folder / "beta.safetensors").write_bytes(data[: len(data) // 2])  # a torn copy
    snap = reg.refresh()
    assert snap.bank.get("beta").digest == good.digest
    assert snap.stale == {"beta"}
    assert [r.source for r in snap.rejected] == ["beta.safetensors"]
    (folder / "beta.safetensors").write_bytes(prefix_bytes(seed=9))  # fixed with new content
    snap = reg.refresh()
    assert snap.bank.get("beta").digest != good.digest
    assert snap.stale == frozenset()
    assert snap.rejected == ()


def test_refresh_loads_new_drops_removed_and_keeps_unchanged_bank(
    folder: Path, write_prefix: WritePrefix
) -> None:
    reg = make_registry(folder)
    first = reg.load()
    assert reg.refresh() is first  # nothing changed: same snapshot, same bank object
    write_prefix(folder, "delta", FAKE_SPEC, seed=7)
    (folder / "alpha.safetensors").unlink()
    snap = reg.refresh()
    assert snap.bank.names == ["base", "beta", "delta", "gamma"]
    assert snap.version == first.version + 1
    assert snap.bank.get("beta") is first.bank.get("beta")  # unchanged files are not re-read


def test_two_entries_with_one_name_reject_the_second(folder: Path) -> None:
    peft_dir = folder / "alpha"
    peft_dir.mkdir()
    snap = make_registry(folder).load()
    assert snap.bank.get("alpha").source == "alpha.safetensors"
    assert any(r.source == "alpha" for r in snap.rejected)  # an incomplete PEFT folder, rejected


def test_patch_is_all_or_nothing_and_persisted(folder: Path) -> None:
    reg = make_registry(folder)
    reg.load()
    snap = reg.apply_patch({"beta": {"enabled": False}, "gamma": {"enabled": False}})
    assert snap.enabled == {"base", "alpha"}
    assert json.loads((folder / STATE_FILE).read_text())["disabled"] == ["beta", "gamma"]
    with pytest.raises(PrefixNotFound, match="'nope'.*known prefixes: alpha, beta, gamma"):
        reg.apply_patch({"beta": {"enabled": True}, "nope": {"enabled": False}})
    assert reg.snapshot.enabled == {"base", "alpha"}  # the valid half was not applied either
    assert read_disabled(folder) == {"beta", "gamma"}
    assert reg.apply_patch({"gamma": {"enabled": None}}).enabled == {"base", "alpha", "gamma"}
    # a new registry on the same folder (a restart) starts from the persisted state
    assert make_registry(folder).load().enabled == {"base", "alpha", "gamma"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ([1, 2], "JSON object"),
        ({"beta": False}, "expected an object"),
        ({"beta": {"enabled": "no"}}, "must be true, false or null"),
        ({"beta": {"enabled": False, "digest": "x"}}, "only 'enabled' can be changed, not digest"),
        ({"beta": None}, "remove its file"),
    ],
)
def test_malformed_patches_are_refused(folder: Path, patch: object, message: str) -> None:
    reg = make_registry(folder)
    reg.load()
    with pytest.raises(InvalidInput, match=message):
        reg.apply_patch(patch)
    assert not (folder / STATE_FILE).exists()


def test_refresh_picks_up_a_state_file_written_by_another_replica(folder: Path) -> None:
    one, two = make_registry(folder), make_registry(folder)
    one.load()
    two.load()
    one.apply_patch({"alpha": {"enabled": False}})
    assert two.snapshot.enabled == {"base", "alpha", "beta", "gamma"}
    assert two.refresh().enabled == {"base", "beta", "gamma"}


def test_put_validates_writes_atomically_and_publishes(folder: Path) -> None:
    reg = make_registry(folder)
    reg.load()
    data = prefix_bytes(seed=5)
    result = reg.put_prefix("delta", data)
    assert result.created
    assert reg.snapshot.bank.get("delta").digest == result.prefix.digest
    assert (folder / "delta.safetensors").read_bytes() == data
    assert not reg.put_prefix("delta", prefix_bytes(seed=6)).created
    with pytest.raises(InvalidPrefixFile, match="not a valid safetensors"):
        reg.put_prefix("epsilon", b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(InvalidPrefixFile, match="bad prefix name"):
        reg.put_prefix("Bad Name", prefix_bytes())
    assert not (folder / "epsilon.safetensors").exists()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_put_refuses_a_name_served_from_a_peft_folder(tmp_path: Path) -> None:
    write_peft(tmp_path / "delta")
    reg = make_registry(tmp_path)
    assert reg.load().bank.get("delta").kind == "peft"
    with pytest.raises(PrefixConflict, match="served from delta"):
        reg.put_prefix("delta", prefix_bytes())


def test_watcher_publishes_a_dropped_in_file_on_its_change_event(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = make_registry(folder)
    reg.load()

    async def scenario() -> None:
        watcher = FolderWatcher(reg, debounce_ms=200, retry_s=60.0)
        watcher.start()
        try:
            await until_watching(watcher, folder)
            seen = watcher.refreshes
            (folder / "delta.safetensors").write_bytes(prefix_bytes(seed=3))
            await async_wait_until(lambda: "delta" in reg.snapshot.bank.names, what="delta published")
            assert watcher.refreshes > seen  # by a rescan the new file's event caused
        finally:
            await watcher.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    # the change events did it: no watch failure, no retry (which would rescan only after 60 s)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_unwritable_folder_gives_a_clear_error_and_changes_nothing(folder: Path) -> None:
    from service.errors import PrefixStoreUnwritable

    registry = make_registry(folder)
    registry.load()
    # root ignores file modes, so make the writes fail the way a read-only mount does: the state
    # file's path is taken by a directory, and so is the upload's target.
    (folder / STATE_FILE).mkdir()
    with pytest.raises(PrefixStoreUnwritable, match="not writable") as err:
        registry.apply_patch({"alpha": {"enabled": False}})
    assert err.value.status_code == 503
    assert "alpha" in registry.snapshot.enabled_names()
    (folder / "delta.safetensors").mkdir()
    with pytest.raises(PrefixStoreUnwritable, match=r"cannot write delta.safetensors"):
        registry.put_prefix("delta", prefix_bytes(seed=9))
    assert "delta" not in registry.snapshot.bank.names
