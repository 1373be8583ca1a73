"""Every malformed prefix file is rejected with the file's name and the reason; good ones load."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from service.engine.backbone import BackboneSpec
from service.errors import InvalidPrefixFile
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.registry.loader import load_prefix
from service.registry.writer import native_bytes
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.prefixes import random_kv


@pytest.fixture(scope="module")
def spec() -> BackboneSpec:
    """The tiny test BERT's shape (2 layers, 4 heads, head_dim 8, 64 positions): file rules need no model."""
    return replace(FAKE_SPEC, num_heads=4, head_dim=8, hidden_size=32)


def _native(spec: BackboneSpec, **meta: object) -> bytes:
    key, value = random_kv(spec, 4)
    return native_bytes(key, value, {"backbone_fingerprint": spec.fingerprint, **meta})


def _tensors(**tensors: torch.Tensor) -> bytes:
    return st_save(tensors)


def _peft_folder(folder: Path, spec: BackboneSpec, **overrides: object) -> None:
    folder.mkdir()
    cfg = {
        "peft_type": "PREFIX_TUNING",
        "task_type": "FEATURE_EXTRACTION",
        "num_virtual_tokens": 3,
        "num_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "token_dim": spec.hidden_size,
        "num_transformer_submodules": 1,
        **overrides,
    }
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    w = torch.randn(3, spec.num_layers * 2 * spec.hidden_size)
    (folder / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": w}))


def _shape(spec: BackboneSpec, layers: int | None = None, heads: int | None = None, plen: int = 4) -> bytes:
    shape = (layers or spec.num_layers, heads or spec.num_heads, plen, spec.head_dim)
    return _tensors(key=torch.randn(shape), value=torch.randn(shape))


def _nonfinite(spec: BackboneSpec, bad: float) -> bytes:
    key, value = random_kv(spec, 4)
    value[0, 0, 0, 0] = bad
    return _tensors(key=key, value=value)


BAD_FILES: list[tuple[str, str, Callable[[BackboneSpec], bytes], str]] = [
    # (id, file name, content, expected reason fragment)
    (
        "wrong-shape",
        "a.safetensors",
        lambda s: _tensors(key=torch.randn(2, 4, 8), value=torch.randn(2, 4, 8)),
        "must both be",
    ),
    (
        "key-value-mismatch",
        "a.safetensors",
        lambda s: _tensors(key=torch.randn(2, 4, 4, 8), value=torch.randn(2, 4, 5, 8)),
        "must both be",
    ),
    ("wrong-layers", "a.safetensors", lambda s: _shape(s, layers=3), "layers is 3, the backbone has 2"),
    ("wrong-heads", "a.safetensors", lambda s: _shape(s, heads=2), "heads is 2, the backbone has 4"),
    ("nan", "a.safetensors", lambda s: _nonfinite(s, float("nan")), "NaN or inf"),
    ("inf", "a.safetensors", lambda s: _nonfinite(s, float("inf")), "NaN or inf"),
    (
        "integer-dtype",
        "a.safetensors",
        lambda s: _tensors(
            key=torch.ones(2, 4, 4, 8, dtype=torch.int32), value=torch.ones(2, 4, 4, 8, dtype=torch.int32)
        ),
        "dtype torch.int32",
    ),
    ("truncated", "a.safetensors", lambda s: _native(s)[:-100], "not a valid safetensors file"),
    ("empty", "a.safetensors", lambda s: b"", "empty file"),
    (
        "not-safetensors",
        "a.safetensors",
        lambda s: b"hello, I am a text file, not tensors" * 4,
        "not a valid safetensors file",
    ),
    ("pickle-content", "a.safetensors", lambda s: pickle.dumps({"key": [1, 2, 3]}), "pickle"),
    (
        "pickle-suffix",
        "a.pt",
        lambda s: pickle.dumps({"key": [1, 2, 3]}),
        "pickle-based files are never loaded",
    ),
    ("bad-name", "Bad Name!.safetensors", lambda s: _native(s), "bad prefix name"),
    (
        "missing-value",
        "a.safetensors",
        lambda s: _tensors(key=torch.randn(2, 4, 4, 8)),
        "missing tensor(s) ['value']",
    ),
    (
        "extra-tensor",
        "a.safetensors",
        lambda s: _tensors(key=torch.randn(2, 4, 4, 8), value=torch.randn(2, 4, 4, 8), x=torch.randn(1)),
        "unexpected tensor(s) ['x']",
    ),
    (
        "other-backbone",
        "a.safetensors",
        lambda s: _native(s, backbone_fingerprint="bert-L12-H768-0000"),
        "trained for backbone bert-L12-H768-0000",
    ),
    (
        "unknown-convention",
        "a.safetensors",
        lambda s: _native(s, position_convention="alibi"),
        "position_convention 'alibi'",
    ),
    (
        "too-long-for-positions",
        "a.safetensors",
        lambda s: _shape(s, plen=63),
        "leaves no room for text in the model's 64 positions",
    ),
    ("over-max-prefix-len", "a.safetensors", lambda s: _shape(s, plen=101), "prefix_len 101 outside 1..100"),
]


@pytest.mark.parametrize(("case", "filename", "content", "reason"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_malformed_native_file_is_rejected_with_reason(
    case: str,
    filename: str,
    content: Callable[[BackboneSpec], bytes],
    reason: str,
    spec: BackboneSpec,
    tmp_path: Path,
) -> None:
    path = tmp_path / filename
    path.write_bytes(content(spec))
    with pytest.raises(InvalidPrefixFile) as err:
        load_prefix(path, spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20))
    assert reason in err.value.message
    assert err.value.message.startswith(filename)


def test_oversized_file_is_rejected(spec: BackboneSpec, tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    path.write_bytes(_native(spec))
    with pytest.raises(InvalidPrefixFile, match="over the 1024-byte limit"):
        load_prefix(path, spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1024))


BAD_PEFT: list[tuple[str, dict[str, object], str]] = [
    ("other-architecture-layers", {"num_layers": 12}, "PEFT config of another architecture: num_layers=12"),
    ("other-architecture-dim", {"token_dim": 768}, "token_dim=768"),
    ("not-prefix-tuning", {"peft_type": "LORA"}, "only PREFIX_TUNING"),
    ("encoder-decoder", {"num_transformer_submodules": 2}, "num_transformer_submodules"),
    ("length-mismatch", {"num_virtual_tokens": 5}, "prompt_embeddings (3, 128), expected (5, 128)"),
]


@pytest.mark.parametrize(("case", "overrides", "reason"), BAD_PEFT, ids=[c[0] for c in BAD_PEFT])
def test_malformed_peft_adapter_is_rejected(
    case: str, overrides: dict[str, object], reason: str, spec: BackboneSpec, tmp_path: Path
) -> None:
    _peft_folder(tmp_path / "adapter", spec, **overrides)
    with pytest.raises(InvalidPrefixFile) as err:
        load_prefix(tmp_path / "adapter", spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20))
    assert reason in err.value.message
    assert err.value.message.startswith("adapter")


def test_peft_folder_without_weights_names_pickles(spec: BackboneSpec, tmp_path: Path) -> None:
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({}))
    with pytest.raises(
        InvalidPrefixFile,
        match=r"needs adapter_config.json and adapter_model.safetensors \(found \['adapter_model.bin'\]",
    ):
        load_prefix(folder, spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20))


def test_good_files_load_with_digest_and_metadata(spec: BackboneSpec, tmp_path: Path) -> None:
    data = _native(spec, task="sentiment", labels=["neg", "pos"], metrics={"dev_accuracy": 0.9})
    (tmp_path / "sentiment.safetensors").write_bytes(data)
    _peft_folder(tmp_path / "topic", spec)
    prefix = load_prefix(
        tmp_path / "sentiment.safetensors", spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20)
    )
    assert prefix.name == "sentiment"
    assert prefix.prefix_len == 4
    assert prefix.position_shift == 4  # PEFT convention is the default
    assert prefix.metadata["labels"] == ["neg", "pos"]
    assert prefix.metadata["metrics"] == {"dev_accuracy": 0.9}
    import hashlib

    assert prefix.digest == hashlib.sha256(data).hexdigest()
    peft = load_prefix(tmp_path / "topic", spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20))
    assert (peft.kind, peft.prefix_len, peft.key.shape) == ("peft", 3, (2, 4, 3, 8))


def test_scan_folder_keeps_serving_good_files_next_to_bad_ones(spec: BackboneSpec, tmp_path: Path) -> None:
    (tmp_path / "good.safetensors").write_bytes(_native(spec))
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    (tmp_path / "README.md").write_text("docs are not prefixes")
    (tmp_path / "state.json").write_text('{"disabled": []}')
    (tmp_path / ".good.safetensors.123.tmp").write_bytes(b"partial write")
    loaded, rejected = scan_folder(tmp_path, spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20))
    assert [p.name for p in loaded] == ["good"]
    assert [(r.source, "not a valid safetensors file" in r.reason) for r in rejected] == [
        ("broken.safetensors", True)
    ]


def test_native_bytes_are_deterministic_and_round_trip(spec: BackboneSpec, tmp_path: Path) -> None:
    key, value = random_kv(spec, 4)
    meta = {
        "task": "t",
        "labels": ["a", "b"],
        "metrics": {"acc": 0.5, "f1": 0.4},
        "z": "1",
        "b": "2",
        "m": "3",
    }
    first = native_bytes(key, value, meta)
    assert all(native_bytes(key, value, dict(reversed(list(meta.items())))) == first for _ in range(5))
    (tmp_path / "t.safetensors").write_bytes(first)
    loaded = load_prefix(
        tmp_path / "t.safetensors", spec, PrefixLimits(max_prefix_len=100, max_file_bytes=1 << 20)
    )
    assert torch.equal(loaded.key, key)
    assert torch.equal(loaded.value, value)
    assert loaded.metadata["metrics"] == {"acc": 0.5, "f1": 0.4}
