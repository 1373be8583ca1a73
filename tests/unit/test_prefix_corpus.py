"""The malformed-prefix corpus (issue 15): every bad folder entry found so far, each rejected with its
reason, while a good prefix next to it keeps being served, PATCH and PUT keep working, and nothing
blocks or escapes the folder. Add a case here for every new way a prefix file can be wrong."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save as st_save

from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from service.registry.writer import native_bytes
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.http import fake_app, fake_prefix_bytes

S = FAKE_SPEC  # 2 layers, 2 heads, head_dim 4, hidden 8, 64 positions
MAX_FILE = 4 * 1024 * 1024
LIMITS = PrefixLimits(max_prefix_len=100, max_file_bytes=MAX_FILE, settle_s=0)
Make = Callable[[Path], str]  # writes one entry into the folder, returns its source name


def kv(
    layers: int = S.num_layers, heads: int = S.num_heads, plen: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (layers, heads, plen, S.head_dim)
    return torch.randn(shape) * 0.5, torch.randn(shape) * 0.5


def tensors(name: str, meta: dict[str, str] | None = None, **ts: torch.Tensor) -> Make:
    def make(folder: Path) -> str:
        (folder / name).write_bytes(st_save(ts, metadata=meta))
        return name

    return make


def native(meta: dict[str, str], layers: int = S.num_layers, name: str = "a.safetensors") -> Make:
    key, value = kv(layers)
    return tensors(name, {"backbone_fingerprint": S.fingerprint, **meta}, key=key, value=value)


def raw(name: str, data: bytes | Callable[[], bytes]) -> Make:
    def make(folder: Path) -> str:
        (folder / name).write_bytes(data() if callable(data) else data)
        return name

    return make


def nonfinite(bad: float) -> Make:
    key, value = kv()
    value[0, 0, 0, 0] = bad
    return tensors("a.safetensors", key=key, value=value)


PEFT = {
    "peft_type": "PREFIX_TUNING",
    "num_layers": S.num_layers,
    "num_attention_heads": S.num_heads,
    "token_dim": S.hidden_size,
    "num_virtual_tokens": 3,
}


def peft(config: dict[str, Any] | bytes | None = None, name: str = "adapter", scale: float = 1.0) -> Make:
    def make(folder: Path) -> str:
        (folder / name).mkdir()
        body = (
            json.dumps(PEFT if config is None else config).encode()
            if not isinstance(config, bytes)
            else config
        )
        (folder / name / "adapter_config.json").write_bytes(body)
        w = torch.randn(3, S.num_layers * 2 * S.hidden_size) * scale
        (folder / name / "adapter_model.safetensors").write_bytes(st_save({"prompt_embeddings": w}))
        return name

    return make


def sparse_config(folder: Path) -> str:
    peft()(folder)
    with (folder / "adapter" / "adapter_config.json").open("r+b") as fh:
        fh.truncate(256 * 1024 * 1024)
    return "adapter"


def pickled_peft(folder: Path) -> str:
    (folder / "legacy").mkdir()
    (folder / "legacy" / "adapter_config.json").write_text("{}")
    (folder / "legacy" / "adapter_model.bin").write_bytes(pickle.dumps({}))
    return "legacy"


def fifo(folder: Path) -> str:
    os.mkfifo(folder / "x.safetensors")
    return "x.safetensors"


def symlink(name: str, target: Callable[[Path], Path]) -> Make:
    def make(folder: Path) -> str:
        (folder / name).symlink_to(target(folder))
        return name

    return make


def outside_file(folder: Path) -> Path:
    out = folder.parent / "outside.safetensors"
    out.write_bytes(fake_prefix_bytes(seed=8))
    return out


def torn(folder: Path) -> str:
    old, new = fake_prefix_bytes(seed=1), fake_prefix_bytes(seed=2)
    (folder / "torn.safetensors").write_bytes(new[: len(new) - 64] + old[len(new) - 64 :])
    return "torn.safetensors"


def bad_checksum(folder: Path) -> str:
    key, value = kv()
    (folder / "sum.safetensors").write_bytes(
        st_save({"key": key, "value": value}, metadata={"content_sha256": "abc"})
    )
    return "sum.safetensors"


def duplicate(folder: Path) -> str:
    (folder / "dup.safetensors").write_bytes(fake_prefix_bytes(seed=3))
    peft(name="dup")(folder)
    return "dup.safetensors"  # "dup" (the folder) sorts first and takes the name


def state(body: str) -> Make:
    return raw("state.json", body.encode())


CORPUS: list[tuple[str, Make, str]] = [
    # --- native files: the original table --------------------------------------------------------------
    (
        "wrong-shape",
        tensors("a.safetensors", key=torch.randn(2, 4, 8), value=torch.randn(2, 4, 8)),
        "must both be",
    ),
    (
        "key-value-mismatch",
        tensors("a.safetensors", key=torch.randn(2, 2, 4, 4), value=torch.randn(2, 2, 5, 4)),
        "must both be",
    ),
    ("wrong-layers", native({}, layers=3), "layers is 3, the backbone has 2"),
    (
        "wrong-heads",
        tensors("a.safetensors", key=kv(heads=1)[0], value=kv(heads=1)[1]),
        "heads is 1, the backbone has 2",
    ),
    ("nan", nonfinite(float("nan")), "NaN or inf"),
    ("inf", nonfinite(float("inf")), "NaN or inf"),
    (
        "integer-dtype",
        tensors(
            "a.safetensors",
            key=torch.ones(2, 2, 4, 4, dtype=torch.int32),
            value=torch.ones(2, 2, 4, 4, dtype=torch.int32),
        ),
        "dtype torch.int32",
    ),
    ("truncated", raw("a.safetensors", lambda: fake_prefix_bytes()[:-100]), "not a valid safetensors file"),
    ("empty", raw("a.safetensors", b""), "empty file"),
    (
        "not-safetensors",
        raw("a.safetensors", b"hello, I am text, not tensors" * 4),
        "not a valid safetensors file",
    ),
    ("pickle-content", raw("a.safetensors", pickle.dumps({"key": [1, 2, 3]})), "pickle"),
    ("pickle-suffix", raw("a.pt", pickle.dumps({"key": [1, 2, 3]})), "pickle-based files are never loaded"),
    ("bad-name", raw("Bad Name!.safetensors", lambda: fake_prefix_bytes()), "bad prefix name"),
    ("missing-value", tensors("a.safetensors", key=torch.randn(2, 2, 4, 4)), "missing tensor(s) ['value']"),
    (
        "extra-tensor",
        tensors("a.safetensors", key=kv()[0], value=kv()[1], x=torch.randn(1)),
        "unexpected tensor(s) ['x']",
    ),
    (
        "other-backbone",
        native({"backbone_fingerprint": "bert-L12-H768-0000"}),
        "trained for backbone bert-L12-H768-0000",
    ),
    ("unknown-convention", native({"position_convention": "alibi"}), "position_convention 'alibi'"),
    ("unknown-format", native({"format": "other/9"}), "format 'other/9' is not supported"),
    (
        "too-long-for-positions",
        tensors("a.safetensors", key=kv(plen=63)[0], value=kv(plen=63)[1]),
        "leaves no room for text in the model's 64 positions",
    ),
    (
        "over-max-prefix-len",
        tensors("a.safetensors", key=kv(plen=101)[0], value=kv(plen=101)[1]),
        "prefix_len 101 outside 1..100",
    ),
    ("oversized", raw("a.safetensors", b"\0" * (MAX_FILE + 1)), f"over the {MAX_FILE}-byte limit"),
    # --- PEFT adapters: the original table ----------------------------------------------------------------
    (
        "peft-other-layers",
        peft(PEFT | {"num_layers": 12}),
        "PEFT config of another architecture: num_layers=12",
    ),
    ("peft-other-dim", peft(PEFT | {"token_dim": 768}), "token_dim=768"),
    ("peft-not-prefix-tuning", peft(PEFT | {"peft_type": "LORA"}), "only PREFIX_TUNING"),
    ("peft-encoder-decoder", peft(PEFT | {"num_transformer_submodules": 2}), "num_transformer_submodules"),
    (
        "peft-length-mismatch",
        peft(PEFT | {"num_virtual_tokens": 5}),
        "prompt_embeddings (3, 32), expected (5, 32)",
    ),
    ("peft-pickled", pickled_peft, "(found ['adapter_model.bin']: pickle files are never loaded)"),
    ("peft-empty-folder", lambda f: (f / "empty").mkdir() or "empty", "needs adapter_config.json"),
    # --- first_layer (issue 10) and the reserved name -------------------------------------------------------
    ("first-layer-not-int", native({"first_layer": "abc"}), "first_layer 'abc' is not an integer"),
    (
        "first-layer-out-of-range",
        native({"first_layer": "2", "position_convention": "none"}, layers=1),
        "outside 0..1",
    ),
    (
        "first-layer-wrong-dim",
        native({"first_layer": "1", "position_convention": "none"}),
        "first_layer 1 needs 1",
    ),
    ("first-layer-with-peft-positions", native({"first_layer": "1"}, layers=1), "must use 'none'"),
    ("base-file", raw("base.safetensors", lambda: fake_prefix_bytes()), "base is a reserved built-in name"),
    ("base-folder", peft(name="base"), "base is a reserved built-in name"),
    ("duplicate-name", duplicate, "prefix name 'dup' is already taken by dup"),
    # --- issue 15 --------------------------------------------------------------------------------------------
    ("huge-values", nonfinite(1e30), "magnitude 1e+30; the limit is 100"),
    ("huge-peft-values", peft(scale=1e6), "magnitude"),
    ("nan-metadata", native({"labels": "[NaN]"}), "NaN is not JSON"),
    ("infinity-metadata", native({"m": '{"x": -Infinity}'}), "-Infinity is not JSON"),
    (
        "deep-metadata",
        native({"x": "[" * 100_000 + "]" * 100_000}),
        "nested 100000 levels deep; the limit is 32",
    ),
    ("huge-header", native({"x": "y" * (1024 * 1024 + 1)}), "over the 1048576-byte limit"),
    (
        "peft-tokens-abc",
        peft(PEFT | {"num_virtual_tokens": "abc"}),
        "num_virtual_tokens is 'abc', expected an integer",
    ),
    (
        "peft-tokens-null",
        peft(PEFT | {"num_virtual_tokens": None}),
        "num_virtual_tokens is None, expected an integer",
    ),
    ("peft-tokens-bool", peft(PEFT | {"num_virtual_tokens": True}), "num_virtual_tokens is True"),
    ("peft-config-deep", peft(b"[" * 40 + b"]" * 40), "nested 40 levels deep; the limit is 32"),
    ("peft-config-nan", peft(json.dumps(PEFT).replace("3}", "NaN}").encode()), "NaN is not JSON"),
    ("peft-config-not-object", peft(b"[1, 2]"), "adapter_config.json is not a JSON object"),
    ("peft-config-not-utf8", peft(b"\xff\xfe{}"), "not UTF-8"),
    ("peft-config-sparse-1gib", sparse_config, "over the 65536-byte limit"),
    ("fifo", fifo, "a FIFO, not a regular file"),
    (
        "symlink-to-dev-zero",
        symlink("zero.safetensors", lambda f: Path("/dev/zero")),
        "leaves the prefix folder",
    ),
    ("symlink-out-of-folder", symlink("out.safetensors", outside_file), "leaves the prefix folder"),
    ("symlinked-dir-to-usr", symlink("usr", lambda f: Path("/usr")), "leaves the prefix folder"),
    ("dangling-symlink", symlink("gone.safetensors", lambda f: Path("nowhere")), "cannot read"),  # relative
    ("torn-in-place-copy", torn, "content_sha256 does not match the tensors"),
    ("checksum-not-hex", bad_checksum, "content_sha256 'abc' is not a hex sha256"),
    ("state-disabled-null", state('{"disabled": null}'), "'disabled' must be a list of names, got null"),
    ("state-disabled-5", state('{"disabled": 5}'), "'disabled' must be a list of names, got 5"),
    ("state-not-json", state("{"), "state.json: unreadable"),
]


@pytest.mark.parametrize(("case", "make", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
def test_each_bad_entry_is_rejected_with_its_reason_next_to_a_good_prefix(
    case: str, make: Make, reason: str, tmp_path: Path
) -> None:
    folder = tmp_path / "prefixes"
    folder.mkdir()
    (folder / "good.safetensors").write_bytes(fake_prefix_bytes(seed=0))
    source = make(folder)
    registry = PrefixRegistry(folder, S, LIMITS)
    snap = registry.load()
    assert [r.source for r in snap.rejected] == [source]
    assert snap.rejected[0].reason.startswith(f"{source}: ")
    assert reason in snap.rejected[0].reason
    assert "good" in snap.bank.names
    # the registry keeps working: a PATCH and a PUT go through
    assert "good" not in registry.apply_patch({"good": {"enabled": False}}).enabled
    assert registry.put_prefix("fresh", native_bytes(*kv(), {})).created


def test_the_whole_corpus_at_once_through_the_app(tmp_path: Path) -> None:
    folder = tmp_path / "prefixes"
    folder.mkdir()
    (folder / "good.safetensors").write_bytes(fake_prefix_bytes(seed=0))
    expected: dict[str, str] = {}
    for case, make, reason in CORPUS:
        if case.startswith("state-") and case != "state-disabled-5":
            continue  # one state file per folder
        sub = tmp_path / case  # each case alone, then moved in (its entry names may repeat across cases)
        sub.mkdir()
        source = make(sub)
        target = (
            source
            if source in ("state.json",)
            else f"{case}--{source}".lower().replace(" ", "-").replace("!", "")
        )
        if case in ("bad-name", "pickle-suffix", "base-file", "base-folder", "duplicate-name"):
            target = source  # the name is the point of the case
        os.rename(sub / source, folder / target)
        if case == "duplicate-name":
            os.rename(sub / "dup", folder / "dup")
        expected[target] = reason
    settings = {"max_prefix_len": 100, "max_prefix_file_bytes": MAX_FILE, "prefix_settle_ms": 0}
    with fake_app(folder, **settings) as (client, _, _):
        listing = client.get("/prefixes").json()
        reasons = {r["source"]: r["reason"] for r in listing["rejected"]}
        served = {p["name"] for p in listing["prefixes"] if p["kind"] != "builtin"}
        assert set(reasons) == set(expected), set(reasons) ^ set(expected)
        for source, reason in expected.items():
            assert reason in reasons[source], (source, reasons[source])
        assert served == {"good", "dup"}  # dup: the PEFT folder that won the name
        # the corpus's broken state.json disables every prefix at this cold start (issue 23): enable dup
        r = client.patch("/prefixes", json={"good": {"enabled": False}, "dup": {"enabled": True}})
        assert r.status_code == 200, r.text
        assert client.put("/prefixes/fresh", content=fake_prefix_bytes(seed=4)).status_code == 201
        doc = client.post("/embed", json={"inputs": "the cat sat", "prefixes": ["fresh", "dup"]})
        assert doc.status_code == 200, doc.text
