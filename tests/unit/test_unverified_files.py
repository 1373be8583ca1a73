"""Issue 23 item 4: an unverified file is never served as if verified.

- A native file without ``content_sha256`` is refused while ``require_checksum`` is on (the default);
  PUT records the checksum of an upload that has none.
- With the setting off (and for PEFT folders, which carry no checksum) a file loads only after two
  reads a settle window apart hash equal, and is listed as ``verified: false``.
- The torn writer of the issue (an in-place rewrite with a pause longer than the window) is never
  served torn when a checksum is required.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load

from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import fake_app, fake_prefix_bytes, fill_folder, unverified_prefix_bytes
from tests.support.registry import clocked_registry
from tests.support.waiting import wait_until


def _doc(client: object, name: str) -> dict[str, object]:
    doc = client.get("/prefixes").json()  # type: ignore[attr-defined]
    return next(p for p in doc["prefixes"] if p["name"] == name)


def test_a_native_file_without_checksum_is_refused_by_default_naming_the_setting(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "third.safetensors").write_bytes(unverified_prefix_bytes(3))
    with fake_app(folder) as (client, _, _):
        reasons = {r["source"]: r["reason"] for r in client.get("/prefixes").json()["rejected"]}
        assert "no content_sha256" in reasons["third.safetensors"]
        assert "require_checksum" in reasons["third.safetensors"]
        assert "third" not in [p["name"] for p in client.get("/prefixes").json()["prefixes"]]
        assert _doc(client, "alpha")["verified"] is True


def test_put_records_the_checksum_of_an_upload_without_one(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    data = unverified_prefix_bytes(4)
    with fake_app(folder) as (client, _, runtime):
        r = client.put("/prefixes/delta", content=data)
        assert r.status_code == 201, r.text
        stored = (folder / "delta.safetensors").read_bytes()
        assert r.json()["digest"] == hashlib.sha256(stored).hexdigest() != hashlib.sha256(data).hexdigest()
        assert r.json()["verified"] is True
        assert len(r.json()["metadata"]["content_sha256"]) == 64
        # the tensors are the uploaded ones, byte for byte
        mine = runtime.registry.snapshot.bank.get("delta")  # type: ignore[union-attr]
        assert torch.equal(st_load(stored)["key"], st_load(data)["key"])
        assert torch.equal(mine.value, st_load(data)["value"])
    # after a restart (require_checksum on) the stored file loads as verified
    with fake_app(folder) as (client, _, _):
        assert _doc(client, "delta")["verified"] is True


def test_with_the_setting_off_two_equal_reads_a_window_apart_load_it_as_unverified(
    tmp_path: Path,
) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    registry, clock = clocked_registry(folder, settle_s=2.0, require_checksum=False)
    path = folder / "third.safetensors"
    path.write_bytes(unverified_prefix_bytes(3))
    assert "third" not in registry.refresh().bank.names  # read 1
    clock.advance(1.0)
    path.write_bytes(unverified_prefix_bytes(5))  # a different content before the window ended
    assert "third" not in registry.refresh().bank.names  # read 1 again, of the new content
    clock.advance(1.5)
    assert "third" not in registry.refresh().bank.names  # only 1.5 s since that read
    clock.advance(0.5)
    snap = registry.refresh()  # 2 s after it, same content: loaded
    third = snap.bank.get("third")
    assert third.digest == hashlib.sha256(unverified_prefix_bytes(5)).hexdigest()
    assert snap.rejected == ()


def test_unverified_prefixes_are_listed_as_such(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "third.safetensors").write_bytes(unverified_prefix_bytes(3))
    with fake_app(folder, require_checksum=False, prefix_settle_ms=50) as (client, _, _):
        # the start-up scan waits (bounded) for the second read
        assert _doc(client, "third")["verified"] is False
        assert _doc(client, "alpha")["verified"] is True
        assert _doc(client, "base")["verified"] is True


@pytest.mark.parametrize("checked", [True, False], ids=["checksum-required", "no-checksum-setting-off"])
def test_a_torn_in_place_rewrite_past_the_window_fools_timing_but_not_a_checksum(
    checked: bool, tmp_path: Path
) -> None:
    """The probe's torn writer, stepped on the registry's clock: half the new bytes, a pause longer than
    the settle window, the rest. Without a checksum (setting off) the torn half is served: no timing
    rule can see a paused writer, which is why a checksum is required by default. With one, never."""
    folder = tmp_path
    old, new = (
        (fake_prefix_bytes(seed=1), fake_prefix_bytes(seed=2))
        if checked
        else (unverified_prefix_bytes(1), unverified_prefix_bytes(2))
    )
    assert len(old) == len(new)
    registry, clock = clocked_registry(folder, settle_s=0.5, require_checksum=checked)
    (folder / "beta.safetensors").write_bytes(old)
    registry.refresh()
    clock.advance(0.5)
    assert registry.refresh().bank.get("beta").digest == hashlib.sha256(old).hexdigest()
    half = len(new) - 64
    with (folder / "beta.safetensors").open("r+b") as fh:
        fh.write(new[:half])  # the writer pauses here for 0.8 s
    served = set()
    for _ in range(4):  # reads every 0.2 s during the pause
        served.add(registry.refresh().bank.get("beta").digest)
        clock.advance(0.2)
    with (folder / "beta.safetensors").open("r+b") as fh:
        fh.write(new)
    clock.advance(0.5)
    registry.refresh()
    clock.advance(0.5)
    served.add(registry.refresh().bank.get("beta").digest)
    real = {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    if checked:
        assert served == real  # the old version, then the new one; never the torn one
    else:
        assert served - real, "the two-read rule alone cannot see a writer paused past the window"


@pytest.mark.slow
def test_the_torn_writer_in_real_time_is_never_served_when_a_checksum_is_required(tmp_path: Path) -> None:
    """As the probe ran it: the watcher and a client running, the writer pausing 0.8 s (> the 500 ms
    window) mid-file, three times; every response names a digest of a real version of the file."""
    folder = fill_folder(tmp_path / "prefixes")
    versions = [fake_prefix_bytes(seed=s) for s in (1, 11, 12, 13)]
    (folder / "beta.safetensors").write_bytes(versions[0])
    real = {hashlib.sha256(v).hexdigest() for v in versions}
    seen: set[str] = set()
    done = threading.Event()

    def writer() -> None:
        for data in versions[1:]:
            with (folder / "beta.safetensors").open("r+b") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                done.wait(0.8)  # the pause
                fh.write(data[len(data) // 2 :])
        done.set()

    with fake_app(folder, prefix_settle_ms=500, watch_reconcile_ms=100) as (client, _, _):
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        while not done.is_set():
            r = client.post("/embed", json={"inputs": "x", "prefixes": ["beta"]})
            assert r.status_code == 200, r.text
            seen.add(r.json()["prefixes"][0]["digest"])
        thread.join(10)
        last = hashlib.sha256(versions[-1]).hexdigest()

        def latest() -> bool:
            digest = client.post("/embed", json={"inputs": "x", "prefixes": ["beta"]}).json()["prefixes"][0][
                "digest"
            ]
            seen.add(digest)
            return digest == last

        wait_until(latest, 10, "the last version served")
    assert seen <= real, seen - real


def test_the_exception_type_decides_the_settle_retry_not_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20 item 5a: a PrefixPending (a subclass of the invalid-file error) is looked at again when
    its settle window ends; any other rejection is not, whatever its message says."""
    from service.errors import InvalidPrefixFile, PrefixPending
    from service.registry import entries
    from service.registry.limits import PrefixLimits

    assert issubclass(PrefixPending, InvalidPrefixFile)
    path = tmp_path / "beta.safetensors"
    path.write_bytes(fake_prefix_bytes(seed=1))
    limits = PrefixLimits(settle_s=0.5)
    for exc, retried in (
        (PrefixPending("beta.safetensors: the file changed while it was read"), True),
        (InvalidPrefixFile("beta.safetensors: pending: only the words of a message"), False),
    ):

        def fail(*_: object, exc: Exception = exc, **__: object) -> None:
            raise exc

        monkeypatch.setattr(entries, "load_prefix", fail)
        entry = entries.load_entry(path, None, FAKE_SPEC, limits, tmp_path, now=10.0)
        assert entry.error == exc.message
        assert entry.settle_at == (10.5 if retried else None)
