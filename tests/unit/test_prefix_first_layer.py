"""Issue 10 item 1: the native file's ``first_layer`` (shared-trunk prefixes), its validation, the
writer recording it, the listing showing it; and the reserved built-in name ``base``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from service.engine.backbone import BackboneSpec
from service.errors import InvalidPrefixFile
from service.method.prefix_io import write_native
from service.registry.limits import PrefixLimits
from service.registry.loader import load_prefix
from service.registry.native import parse_native
from service.registry.registry import PrefixRegistry
from service.registry.writer import native_bytes
from tests.support.http import fake_app, fill_folder

# 4 layers, 2 heads, head_dim 4, hidden 8, 64 positions
SPEC = BackboneSpec("bert", 4, 2, 4, 8, 64, 0, 0, "w")


def _kv(layers: int, plen: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (layers, SPEC.num_heads, plen, SPEC.head_dim)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _raw(layers: int, **meta: str) -> bytes:
    """A file written by hand (no writer: no content_sha256, metadata exactly as given)."""
    key, value = _kv(layers)
    return st_save({"key": key, "value": value}, metadata=meta or None)


def _parse(data: bytes, name: str = "p") -> object:
    return parse_native(name, data, SPEC, source=f"{name}.safetensors", limits=PrefixLimits())


def test_a_trunk_prefix_holds_the_top_layers_only() -> None:
    key, value = _kv(SPEC.num_layers - 3)
    data = native_bytes(key, value, {"position_convention": "none"}, first_layer=3)
    prefix = parse_native("top", data, SPEC, source="top.safetensors", limits=PrefixLimits())
    assert prefix.first_layer == 3
    assert prefix.key.shape == (1, SPEC.num_heads, 3, SPEC.head_dim)
    assert torch.equal(prefix.key, key)
    assert torch.equal(prefix.value, value)
    assert prefix.position_shift == 0
    assert prefix.metadata["first_layer"] == "3"


def test_first_layer_defaults_to_zero_and_peft_adapters_are_zero(tmp_path: Path) -> None:
    assert _parse(_raw(SPEC.num_layers)).first_layer == 0  # type: ignore[attr-defined]
    folder = tmp_path / "adapter"
    folder.mkdir()
    cfg = {"peft_type": "PREFIX_TUNING", "num_layers": 4, "num_attention_heads": 2, "token_dim": 8}
    (folder / "adapter_config.json").write_text(json.dumps(cfg | {"num_virtual_tokens": 2}))
    w = torch.randn(2, SPEC.num_layers * 2 * SPEC.hidden_size)
    (folder / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": w}))
    assert load_prefix(folder, SPEC).first_layer == 0


@pytest.mark.parametrize(
    ("layers", "meta", "reason"),
    [
        (4, {"first_layer": "abc"}, "first_layer 'abc' is not an integer"),
        (4, {"first_layer": "1.5"}, "first_layer '1.5' is not an integer"),
        (4, {"first_layer": ""}, "first_layer '' is not an integer"),
        (4, {"first_layer": "-1"}, "first_layer -1 outside 0..3 (the backbone has 4 layers)"),
        (1, {"first_layer": "4", "position_convention": "none"}, "first_layer 4 outside 0..3"),
        (4, {"first_layer": "2", "position_convention": "none"}, "hold 4 layers; first_layer 2 needs 2"),
        (1, {"first_layer": "2", "position_convention": "none"}, "hold 1 layers; first_layer 2 needs 2"),
        (2, {"first_layer": "2", "position_convention": "peft"}, "must use 'none'"),
        (2, {"first_layer": "2"}, "position_convention 'peft' with first_layer 2"),  # peft is the default
    ],
)
def test_bad_first_layer_is_rejected_naming_file_and_reason(
    layers: int, meta: dict[str, str], reason: str
) -> None:
    with pytest.raises(InvalidPrefixFile) as err:
        _parse(_raw(layers, **meta), "trunk")
    assert err.value.message.startswith("trunk.safetensors: ")
    assert reason in err.value.message


def test_the_writer_records_first_layer_and_the_content_checksum(tmp_path: Path) -> None:
    key, value = _kv(2)
    path = tmp_path / "t.safetensors"
    loaded = write_native(path, key, value, {"position_convention": "none"}, SPEC, first_layer=2)
    assert loaded.first_layer == 2
    again = load_prefix(path, SPEC)
    assert again.first_layer == 2
    assert again.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    expected = hashlib.sha256(key.numpy().tobytes() + value.numpy().tobytes()).hexdigest()
    assert again.metadata["content_sha256"] == expected
    with pytest.raises(ValueError, match="first_layer=1 but metadata says"):
        native_bytes(key, value, {"first_layer": 2}, first_layer=1)


def test_listing_shows_first_layer_of_a_trunk_prefix(tmp_path: Path) -> None:
    from service.api.prefixes import listing

    key, value = _kv(1)
    (tmp_path / "top.safetensors").write_bytes(
        native_bytes(key, value, {"position_convention": "none"}, first_layer=3)
    )
    snap = PrefixRegistry(tmp_path, SPEC).load()
    assert [
        (d["name"], d["first_layer"]) for d in listing(snap, "mean")["prefixes"] if d["kind"] != "builtin"
    ] == [("top", 3)]


def test_get_prefixes_shows_first_layer_for_every_prefix(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes")) as (client, _, _):
        docs = client.get("/prefixes").json()["prefixes"]
    assert docs
    assert all(isinstance(d["first_layer"], int) for d in docs)
    assert {d["first_layer"] for d in docs if d["kind"] != "builtin"} == {0}


@pytest.mark.parametrize("entry", ["base.safetensors", "base"])
def test_base_is_a_reserved_name(entry: str, tmp_path: Path) -> None:
    key, value = _kv(SPEC.num_layers)
    data = native_bytes(key, value, {})
    if entry == "base":
        (tmp_path / "base").mkdir()
        cfg = {"peft_type": "PREFIX_TUNING", "num_layers": 4, "num_attention_heads": 2, "token_dim": 8}
        (tmp_path / "base" / "adapter_config.json").write_text(json.dumps(cfg | {"num_virtual_tokens": 2}))
        w = torch.randn(2, SPEC.num_layers * 2 * SPEC.hidden_size)
        (tmp_path / "base" / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": w}))
    else:
        (tmp_path / entry).write_bytes(data)
    (tmp_path / "good.safetensors").write_bytes(data)
    snap = PrefixRegistry(tmp_path, SPEC).load()
    assert [r.reason for r in snap.rejected] == [f"{entry}: base is a reserved built-in name"]
    assert "good" in snap.bank.names
    reg = PrefixRegistry(tmp_path, SPEC)
    reg.load()
    with pytest.raises(InvalidPrefixFile, match="base is a reserved built-in name"):
        reg.put_prefix("base", data)
