"""Issue 22 item 3: ``DELETE /prefixes/{name}`` (admin key) removes a prefix atomically and reports it;
a prefix removed by hand and added back says why it is disabled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import assert_error, fake_app, fake_prefix_bytes, fill_folder

ADMIN = {"Authorization": "Bearer admin-secret"}


def _names(client: object) -> list[str]:
    doc = client.get("/prefixes").json()  # type: ignore[attr-defined]
    return [p["name"] for p in doc["prefixes"]]


def test_delete_removes_the_file_reports_it_and_stops_serving(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, admin_key="admin-secret", prefix_settle_ms=0) as (client, _, runtime):
        digest = runtime.registry.snapshot.bank.get("beta").digest  # type: ignore[union-attr]
        assert_error(client.delete("/prefixes/beta"), 401, "invalid_api_key")
        r = client.delete("/prefixes/beta", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json() | {"bank_version": None} == {
            "deleted": "beta",
            "digest": digest,
            "removed": ["beta.safetensors"],
            "was_enabled": True,
            "bank_version": None,
        }
        assert not (folder / "beta.safetensors").exists()
        assert _names(client) == ["base", "alpha", "gamma"]
        assert_error(
            client.post("/embed", json={"inputs": "x", "prefixes": ["beta"]}), 404, "prefix_not_found"
        )
        assert_error(
            client.delete("/prefixes/beta", headers=ADMIN), 404, "prefix_not_found", "'beta'", "alpha"
        )
        assert_error(client.delete("/prefixes/base", headers=ADMIN), 400, "invalid_input", "built in")
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [".state.lock"]


def test_delete_of_a_disabled_prefix_clears_it_so_an_upload_of_that_name_starts_enabled(
    tmp_path: Path,
) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, admin_key="admin-secret", prefix_settle_ms=0) as (client, _, _):
        assert client.patch("/prefixes/beta", json={"enabled": False}, headers=ADMIN).status_code == 200
        r = client.delete("/prefixes/beta", headers=ADMIN)
        assert r.json()["was_enabled"] is False
        assert json.loads((folder / "state.json").read_text())["disabled"] == []
        assert (
            client.put("/prefixes/beta", content=fake_prefix_bytes(seed=7), headers=ADMIN).status_code == 201
        )
        beta = next(p for p in client.get("/prefixes").json()["prefixes"] if p["name"] == "beta")
        assert (beta["enabled"], beta["disabled_reason"]) == (True, None)


def test_delete_removes_a_peft_folder_and_a_rejected_entry(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    peft = folder / "adapter"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "PREFIX_TUNING",
                "num_layers": FAKE_SPEC.num_layers,
                "num_attention_heads": FAKE_SPEC.num_heads,
                "token_dim": FAKE_SPEC.hidden_size,
                "num_virtual_tokens": 4,
            }
        )
    )
    w = torch.randn(4, FAKE_SPEC.num_layers * 2 * FAKE_SPEC.hidden_size)
    (peft / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": w}))
    (folder / "broken.safetensors").write_bytes(b"not a prefix")
    with fake_app(folder, admin_key="admin-secret", prefix_settle_ms=0) as (client, _, _):
        assert "adapter" in _names(client)
        r = client.delete("/prefixes/adapter", headers=ADMIN)
        assert (r.status_code, r.json()["removed"]) == (200, ["adapter"])
        assert not peft.exists()
        r = client.delete("/prefixes/broken", headers=ADMIN)
        assert (r.status_code, r.json()["digest"], r.json()["removed"]) == (200, None, ["broken.safetensors"])
        assert client.get("/prefixes").json()["rejected"] == []
        assert sorted(p.name for p in folder.iterdir()) == [
            ".state.lock",
            "alpha.safetensors",
            "beta.safetensors",
            "gamma.safetensors",
        ]


def test_delete_of_a_symlink_removes_the_link_not_its_target(tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    (folder / "alias.safetensors").symlink_to(folder / "alpha.safetensors")
    with fake_app(folder, admin_key="admin-secret", prefix_settle_ms=0) as (client, _, _):
        assert client.delete("/prefixes/alias", headers=ADMIN).status_code == 200
        assert (folder / "alpha.safetensors").exists()
        assert _names(client) == ["base", "alpha", "beta", "gamma"]


@pytest.mark.parametrize("readd", ["by hand", "by PUT"])
def test_a_prefix_removed_by_hand_and_added_back_says_why_it_is_disabled(readd: str, tmp_path: Path) -> None:
    folder = fill_folder(tmp_path / "prefixes")
    with fake_app(folder, prefix_settle_ms=0) as (client, _, runtime):
        assert client.patch("/prefixes/beta", json={"enabled": False}).status_code == 200
        data = (folder / "beta.safetensors").read_bytes()
        (folder / "beta.safetensors").unlink()
        runtime.registry.refresh()  # type: ignore[union-attr]
        assert client.get("/prefixes").json()["disabled_without_file"] == ["beta"]
        if readd == "by hand":
            (folder / "beta.safetensors").write_bytes(data)
            runtime.registry.refresh()  # type: ignore[union-attr]
        else:
            assert client.put("/prefixes/beta", content=data).status_code == 201
        beta = next(p for p in client.get("/prefixes").json()["prefixes"] if p["name"] == "beta")
        assert beta["enabled"] is False
        assert "listed as disabled in the state file" in beta["disabled_reason"]
        assert 'PATCH /prefixes/beta {"enabled": true}' in beta["disabled_reason"]
        assert client.get("/prefixes").json()["disabled_without_file"] == []
