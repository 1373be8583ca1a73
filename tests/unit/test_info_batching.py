"""``GET /info`` reports the batcher's running totals (BatcherStats), as its docstring says."""

from __future__ import annotations

from pathlib import Path

from tests.support.http import SERVED, fake_app, fill_folder


def test_info_has_the_batcher_totals(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes")) as (client, _, runtime):
        before = client.get("/info").json()["batching"]
        assert client.post("/embed", json={"inputs": ["a b", "c"]}).status_code == 200
        after = client.get("/info").json()["batching"]
        assert after == runtime.batcher.stats.snapshot()
        assert after["batch_rows"] - before["batch_rows"] == 2 * len(SERVED)
        assert after["batches"] == before["batches"] + 1
        assert after["dropped"] == {}
