"""Issue 23 item 6: every error lists at most about 20 names (10 here), then a count; an empty ``base/`` folder
gets the reserved-name reason."""

from __future__ import annotations

from pathlib import Path

from tests.support.http import assert_error, fake_app, fill_folder

MANY = [f"nope-{i:05d}" for i in range(10_000)]
LIMIT = 2_000  # characters: a message naming 10 names and a count fits easily


def test_a_patch_with_10000_unknown_names_gets_a_short_message(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        r = client.patch("/prefixes", json={n: {"enabled": False} for n in MANY})
        message = assert_error(r, 404, "prefix_not_found", "'nope-00000'", "'nope-00009'", "(and 9990 more)")
        assert "nope-00010" not in message
        assert len(r.content) < LIMIT, len(r.content)  # was 89 KB


def test_known_names_are_bounded_too_in_a_large_bank(tmp_path: Path) -> None:
    names = tuple(f"p{i:03d}" for i in range(60))
    folder = fill_folder(tmp_path / "prefixes", names)
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        r = client.post("/embed", json={"inputs": "x", "prefixes": ["nope"]})
        message = assert_error(r, 404, "prefix_not_found", "'nope'", "base, p000", "(and 51 more)")
        assert "p009" not in message
        r = client.post("/v1/embeddings", json={"input": "x", "model": "nope"})
        assert_error(r, 404, "prefix_not_found", "(and 51 more)")
        r = client.patch("/prefixes", json={"nope": {"enabled": False}})
        assert_error(r, 404, "prefix_not_found", "known prefixes: p000", "(and 50 more)")
        extra = {f"field{i}": 1 for i in range(1000)} | {"enabled": False}
        r = client.patch("/prefixes/p000", json=extra)
        assert_error(r, 400, "invalid_input", "only 'enabled' can be changed", "(and 990 more)")
        assert len(r.content) < LIMIT


def test_many_validation_problems_are_cut_short(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        body = {"inputs": "x", **{f"unknown{i}": 1 for i in range(500)}}
        r = client.post("/embed", json=body)
        assert_error(r, 422, "validation_error", "unknown field 'unknown0'", "(and 490 more)")
        assert len(r.content) < LIMIT


def test_an_empty_base_folder_gets_the_reserved_name_reason(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "base").mkdir()
    with fake_app(folder, prefix_settle_ms=0) as (client, _, _):
        reasons = {r["source"]: r["reason"] for r in client.get("/prefixes").json()["rejected"]}
        assert reasons == {"base": "base: base is a reserved built-in name"}
