"""Issue 15, defects 4-11 and 13 (the prefix files): each scenario as a user or an operator would meet
it through the running app, with the good prefixes served throughout."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import assert_error, fake_app, fake_prefix_bytes, fill_folder, unverified_prefix_bytes
from tests.support.registry import clocked_registry
from tests.support.waiting import in_thread


def peft_folder(folder: Path, config: dict[str, Any] | bytes) -> None:
    folder.mkdir()
    body = config if isinstance(config, bytes) else json.dumps(config).encode()
    (folder / "adapter_config.json").write_bytes(body)
    w = torch.randn(4, FAKE_SPEC.num_layers * 2 * FAKE_SPEC.hidden_size)
    (folder / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": w}))


PEFT_CONFIG = {
    "peft_type": "PREFIX_TUNING",
    "num_layers": FAKE_SPEC.num_layers,
    "num_attention_heads": FAKE_SPEC.num_heads,
    "token_dim": FAKE_SPEC.hidden_size,
    "num_virtual_tokens": 4,
}


def rejected(client: Any) -> dict[str, str]:
    return {r["source"]: r["reason"] for r in client.get("/prefixes").json()["rejected"]}


def serving(client: Any) -> list[str]:
    doc = client.post("/embed", json={"inputs": "the cat sat"})
    assert doc.status_code == 200, doc.text
    vectors = [np.asarray(v) for v in doc.json()["data"][0]["embeddings"].values()]
    assert all(np.isfinite(v).all() for v in vectors)
    names = [p["name"] for p in doc.json()["prefixes"]]
    assert names[0] == "base"  # the built-in is always served (include_base), first
    return names[1:]  # the file prefixes


def test_4_huge_finite_values_are_refused_on_put_and_in_the_folder(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "huge.safetensors").write_bytes(unverified_prefix_bytes(scale=1e30))
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        assert "magnitude" in rejected(client)["huge.safetensors"]
        assert_error(
            client.put("/prefixes/big", content=unverified_prefix_bytes(scale=1e30)),
            422,
            "invalid_prefix_file",
            "limit is 100",
        )
        assert not (folder / "big.safetensors").exists()
        assert serving(client) == ["alpha", "beta", "gamma"]


def test_5_nan_in_metadata_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        for value in ("[NaN]", '{"x": Infinity}', "[-Infinity]"):
            r = client.put("/prefixes/nan", content=unverified_prefix_bytes(labels=value))
            assert_error(r, 422, "invalid_prefix_file", "nan.safetensors", "is not JSON")
            assert not (folder / "nan.safetensors").exists()
        assert serving(client) == ["alpha", "beta", "gamma"]


BAD_ENTRIES: list[tuple[str, Any]] = [
    ("peft-tokens-abc", lambda f: peft_folder(f / "pabc", PEFT_CONFIG | {"num_virtual_tokens": "abc"})),
    ("peft-tokens-null", lambda f: peft_folder(f / "pnull", PEFT_CONFIG | {"num_virtual_tokens": None})),
    (
        "deep-metadata",
        lambda f: (f / "deep.safetensors").write_bytes(
            unverified_prefix_bytes(x="[" * 100_000 + "]" * 100_000)
        ),
    ),
    ("deep-peft-config", lambda f: peft_folder(f / "pdeep", b"[" * 100_000 + b"]" * 100_000)),
]


@pytest.mark.parametrize(("case", "make"), BAD_ENTRIES, ids=[c[0] for c in BAD_ENTRIES])
def test_6_a_malformed_entry_is_its_own_rejection_and_scanning_goes_on(
    case: str, make: Any, tmp_path: Path
) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    make(folder)
    with fake_app(folder, prefix_settle_ms=0) as (client, _, runtime):
        assert len(rejected(client)) == 1
        (folder / "zeta.safetensors").write_bytes(fake_prefix_bytes(seed=5))  # after the bad entry
        r = client.patch("/prefixes", json={"beta": {"enabled": False}})
        assert r.status_code == 200, r.text
        assert [p["name"] for p in r.json()["prefixes"] if p["enabled"]] == ["base", "alpha", "gamma", "zeta"]
        assert serving(client) == ["alpha", "gamma", "zeta"]


@pytest.mark.parametrize("state", ['{"disabled": null}', '{"disabled": 5}', '{"disabled": [1]}', "[1]", "{"])
def test_6_a_broken_state_file_is_reported_and_patch_repairs_it(state: str, tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "state.json").write_text(state)
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        assert "state.json" in rejected(client)
        # Issue 23: a broken state at a cold start never re-enables anything: every prefix starts disabled
        # (it used to start with everything enabled, which silently served disabled prefixes).
        assert "every prefix is disabled" in rejected(client)["state.json"]
        assert serving(client) == []
        r = client.patch("/prefixes", json={"alpha": {"enabled": True}, "gamma": {"enabled": True}})
        assert r.status_code == 200, r.text
        assert json.loads((folder / "state.json").read_text())["disabled"] == ["beta"]
        assert "state.json" not in rejected(client)
        assert serving(client) == ["alpha", "gamma"]


def test_7_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        os.mkfifo(folder / "x.safetensors")
        r = in_thread(lambda: client.patch("/prefixes/beta", json={"enabled": False}), 20)
        assert r.status_code == 200, r.text
        assert "a FIFO, not a regular file" in rejected(client)["x.safetensors"]
        r = in_thread(lambda: client.put("/prefixes/delta", content=fake_prefix_bytes(seed=4)), 20)
        assert r.status_code == 201


def test_8_the_byte_limit_is_on_bytes_read_not_on_stat(tmp_path: Path) -> None:
    from service.errors import InvalidPrefixFile
    from service.registry.reading import read_limited

    status = Path("/proc/self/status")  # a regular file whose stat size is 0
    assert status.stat().st_size == 0
    with pytest.raises(InvalidPrefixFile, match="over the 100-byte limit"):
        read_limited(status, 100, "status")
    with pytest.raises(InvalidPrefixFile, match="a character device, not a regular file"):
        read_limited(Path("/dev/zero"), 100, "zero")
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "zero.safetensors").symlink_to("/dev/zero")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        assert "leaves the prefix folder" in rejected(client)["zero.safetensors"]
        assert client.patch("/prefixes/beta", json={"enabled": False}).status_code == 200


def test_9_adapter_config_has_a_size_limit(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    peft_folder(folder / "sparse", PEFT_CONFIG)
    with (folder / "sparse" / "adapter_config.json").open("r+b") as fh:
        fh.truncate(256 * 1024 * 1024)  # sparse: takes no disk, would take 256 MiB of memory to read
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        assert "over the 65536-byte limit" in rejected(client)["sparse"]
        assert serving(client) == ["alpha", "beta", "gamma"]


def test_10_a_torn_in_place_rewrite_is_never_served(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, runtime):
        good = runtime.registry.snapshot.bank.get("beta").digest
        old, new = (folder / "beta.safetensors").read_bytes(), fake_prefix_bytes(seed=9)
        assert len(old) == len(new)
        half = (
            len(new) - 64
        )  # the new header and most tensors, the old tail: as a slow in-place copy leaves it
        with (folder / "beta.safetensors").open("r+b") as fh:
            fh.write(new[:half])
        runtime.registry.refresh()
        listing = client.get("/prefixes").json()
        assert "content_sha256 does not match" in rejected(client)["beta.safetensors"]
        beta = next(p for p in listing["prefixes"] if p["name"] == "beta")
        assert (beta["digest"], beta["stale"]) == (good, True)
        with (folder / "beta.safetensors").open("r+b") as fh:
            fh.write(new)  # the copy completes
        runtime.registry.refresh()
        beta = next(p for p in client.get("/prefixes").json()["prefixes"] if p["name"] == "beta")
        assert (beta["stale"], beta["digest"] != good) == (False, True)


def test_10_an_unverified_file_waits_until_it_settled(tmp_path: Path) -> None:
    # Issue 23 replaced "unchanged for the window by its mtime" (fooled by a writer that pauses) with
    # two reads a window apart that must hash equal; the window passes on the registry's clock here.
    folder = fill_folder(tmp_path / "prefixes")
    registry, clock = clocked_registry(folder, settle_s=3600, require_checksum=False)
    (folder / "fresh.safetensors").write_bytes(
        unverified_prefix_bytes(seed=3)
    )  # no checksum, written just now
    snap = registry.refresh()
    assert "pending" in {r.source: r.reason for r in snap.rejected}["fresh.safetensors"]
    assert "fresh" not in snap.bank.names
    clock.advance(3601)  # unchanged for the window
    snap = registry.refresh()
    assert "fresh" in snap.bank.names
    assert snap.rejected == ()


def test_11_symlinks_leaving_the_folder_are_refused_inside_ones_are_served(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.safetensors").write_bytes(fake_prefix_bytes(seed=6))
    peft_folder(outside / "adapter", PEFT_CONFIG)
    (folder / "out.safetensors").symlink_to(outside / "o.safetensors")
    (folder / "outdir").symlink_to(outside / "adapter")
    (folder / "usr").symlink_to("/usr")
    (folder / "alias.safetensors").symlink_to(folder / "alpha.safetensors")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, runtime):
        reasons = rejected(client)
        assert set(reasons) == {"out.safetensors", "outdir", "usr"}
        assert all("leaves the prefix folder" in r for r in reasons.values())
        assert serving(client) == ["alias", "alpha", "beta", "gamma"]
        from service.registry.watcher import FolderWatcher

        watcher = FolderWatcher(runtime.registry)
        assert watcher.watch_paths() == [folder.resolve()]  # no symlinked directory is watched
        (folder / "late.safetensors").symlink_to(outside / "o.safetensors")
        from watchfiles import Change

        assert watcher.relevant(Change.added, str(folder.resolve() / "late.safetensors"))


def test_13_orphaned_temp_files_of_the_writer_are_removed_at_start(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    orphan = folder / ".delta.safetensors.k2j3h4.tmp"
    orphan.write_bytes(b"half of a prefix, its writer killed")
    an_hour_ago = time.time() - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    live = folder / ".epsilon.safetensors.a8s7d6.tmp"  # another replica writing right now
    live.write_bytes(b"being written")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        assert not orphan.exists()
        assert live.exists()
        assert serving(client) == ["alpha", "beta", "gamma"]
