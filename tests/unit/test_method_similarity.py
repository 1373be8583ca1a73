"""Task embeddings from prefix parameters: properties of the measure, ranking, heatmap, HTTP route."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.engine.backbone import BackboneSpec
from service.engine.prefix import LoadedPrefix
from service.method.prefix_io import load_prefixes, write_native
from service.method.similarity import heatmap
from service.registry.init_record import normal_prompt
from service.registry.similarity import (
    rank_for,
    similarity_document,
    similarity_matrix,
    task_embedding,
)
from service.registry.writer import native_bytes
from tests.support.http import assert_error, fake_app, fill_folder

SPEC = BackboneSpec("bert", 2, 2, 4, 8, 64, 0, 0, "w")
INIT = {"method": "normal", "seed": 0, "std": 0.5}


def _start(plen: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = normal_prompt(SPEC.num_layers, SPEC.hidden_size, plen, 0, 0.5)
    kv = w.view(plen, 2, 2, 2, 4).permute(1, 2, 3, 0, 4)
    return kv[:, 0], kv[:, 1]


def _prefix(
    name: str, delta_seed: int | None, plen: int = 3, scale: float = 1.0, init: bool = True
) -> LoadedPrefix:
    key, value = _start(plen)
    if delta_seed is not None:
        g = torch.Generator().manual_seed(delta_seed)
        key = key + scale * torch.randn(key.shape, generator=g)
        value = value + scale * torch.randn(value.shape, generator=g)
    meta = {"init": INIT} if init else {}
    return LoadedPrefix(name, name * 4, key, value, "peft", name, "native", meta)


def test_self_similarity_is_one_and_matrix_symmetric() -> None:
    prefixes = [_prefix("a", 1), _prefix("b", 2), _prefix("c", 3, plen=5), _prefix("d", 4, init=False)]
    sims = similarity_matrix(prefixes)
    assert sims.shape == (4, 4)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-12)
    assert np.array_equal(sims, sims.T)
    assert np.all(np.abs(sims) <= 1.0)
    assert not np.allclose(sims[0, 1:], 1.0)  # independent random changes are not similar


def test_change_from_init_is_what_is_compared() -> None:
    """Two prefixes that moved the same way (different sizes) are identical tasks; raw parameters are
    dominated by the shared start and call everything similar."""
    same_a, same_b, other = _prefix("a", 7, scale=0.1), _prefix("b", 7, scale=0.3), _prefix("c", 8, scale=0.1)
    rel = similarity_matrix([same_a, same_b, other])
    assert rel[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert abs(rel[0, 2]) < 0.5
    raw = similarity_matrix([same_a, same_b, other], relative=False)
    assert raw[0, 2] > 0.9


def test_mean_measure_ignores_slot_order_flat_does_not() -> None:
    a = _prefix("a", 3, init=False)
    perm = torch.tensor([2, 0, 1])
    b = LoadedPrefix("b", "b", a.key[:, :, perm], a.value[:, :, perm], "peft", "b", "native", {})
    assert similarity_matrix([a, b])[0, 1] == pytest.approx(1.0)
    assert similarity_matrix([a, b], measure="flat")[0, 1] < 0.99
    # issue 22 item 8: a pair the flat measure cannot compare (different lengths) is NaN, not an error
    flat = similarity_matrix([a, _prefix("c", 1, plen=4)], measure="flat")
    assert np.isnan(flat[0, 1])
    assert np.isnan(flat[1, 0])
    assert flat[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown measure"):
        task_embedding(a, "cosine")


def test_ranking_and_document() -> None:
    target = _prefix("t", 5, scale=0.2)
    near = LoadedPrefix(
        "near", "n", target.key * 1.0 + 0.0, target.value, "peft", "n", "native", {"init": INIT}
    )
    prefixes = [target, _prefix("far", 9), near]
    ranking = rank_for("t", prefixes)
    assert [n for n, _ in ranking] == ["near", "far"]
    assert ranking[0][1] == pytest.approx(1.0)
    doc = similarity_document(prefixes)
    assert [p["name"] for p in doc["prefixes"]] == ["far", "near", "t"]
    assert doc["matrix"][0][0] == 1.0
    assert doc["matrix"][1][2] == doc["matrix"][2][1]
    doc = similarity_document(prefixes, target="t")
    assert doc["target"] == "t"
    assert [r["name"] for r in doc["ranking"]] == ["near", "far"]
    with pytest.raises(KeyError):
        rank_for("missing", prefixes)


def test_heatmap_png(tmp_path: Path) -> None:
    prefixes = [_prefix("a", 1), _prefix("b", 2)]
    heatmap(["a", "b"], similarity_matrix(prefixes), tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_written_prefix_keeps_init_and_similarity_is_one(tmp_path: Path) -> None:
    p = _prefix("x", 1)
    meta = {"init": INIT, "task": "x", "backbone_fingerprint": SPEC.fingerprint}
    loaded = write_native(tmp_path / "x.safetensors", p.key, p.value, meta, SPEC)
    again = load_prefixes([tmp_path], SPEC)[0]
    assert again.metadata["init"] == INIT
    assert again.digest == loaded.digest
    assert similarity_matrix([again, p])[0, 1] == pytest.approx(1.0)


def test_header_of_640_bytes_is_not_taken_for_a_pickle(tmp_path: Path) -> None:
    """A safetensors header length of 0x0280 starts the file with 0x80 0x02, like a pickle."""
    p = _prefix("x", 1)
    for pad in range(1200):
        meta = {"backbone_fingerprint": SPEC.fingerprint, "note": "n" * pad}
        data = native_bytes(p.key, p.value, meta)
        if data[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no padding gives a 0x0280-byte header")
    loaded = write_native(tmp_path / "x.safetensors", p.key, p.value, meta, SPEC)
    assert torch.equal(loaded.key, p.key)


def test_http_similarity_route(tmp_path: Path) -> None:
    with fake_app(fill_folder(tmp_path / "prefixes")) as (client, _fake, runtime):
        r = client.get("/prefixes/similarity")
        assert r.status_code == 200, r.text
        doc = r.json()
        names = [p["name"] for p in doc["prefixes"]]
        assert names == ["alpha", "beta", "gamma"]
        assert all(p["enabled"] for p in doc["prefixes"])
        matrix = np.array(doc["matrix"])
        np.testing.assert_allclose(np.diag(matrix), 1.0)
        np.testing.assert_allclose(matrix, matrix.T)
        bank = runtime.registry.snapshot.bank
        np.testing.assert_allclose(
            matrix, similarity_matrix([p for p in bank.prefixes if not p.builtin]), atol=1e-6
        )
        assert doc["bank_version"] == bank.version
        r = client.get("/prefixes/similarity", params={"target": "beta"})
        assert r.status_code == 200
        ranking = r.json()["ranking"]
        assert {x["name"] for x in ranking} == {"alpha", "gamma"}
        assert ranking[0]["similarity"] >= ranking[1]["similarity"]
        assert_error(
            client.get("/prefixes/similarity", params={"target": "nope"}), 404, "prefix_not_found", "nope"
        )
        assert client.get("/prefixes/similarity", params={"measure": "bogus"}).status_code == 422


def test_transfer_report_ranks_sources_against_measured_transfer() -> None:
    from service.method.transfer import transfer_markdown, transfer_report

    target = _prefix("t", 5, scale=0.2)
    target.metadata["task"] = "tgt"

    def source(name: str, mix: float) -> LoadedPrefix:
        # a source whose change from the start is `mix` parts the target's change, the rest noise
        start_k, start_v = _start(3)
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        dk = mix * (target.key - start_k) + (1 - mix) * 0.2 * torch.randn(start_k.shape, generator=g)
        dv = mix * (target.value - start_v) + (1 - mix) * 0.2 * torch.randn(start_v.shape, generator=g)
        return LoadedPrefix(
            name, name, start_k + dk, start_v + dv, "peft", name, "native", {"init": INIT, "task": name}
        )

    sources = [source("s1", 0.9), source("s2", 0.5), source("s3", 0.0)]
    acc = {"plain": 0.5, "s1": 0.8, "s2": 0.6, "s3": 0.4, "concat": 0.9}
    acc |= {"concat - s1": 0.7, "concat - s2": 0.85, "concat - s3": 0.92}
    kinds = {"plain": "plain", "concat": "concat", "s1": "single", "s2": "single", "s3": "single"}
    rows = [
        {"target": "tgt", "representation": k, "kind": kinds.get(k, "leave-one-out"), "accuracy": v}
        for k, v in acc.items()
    ]
    evaluation = {"rows": rows, "targets": {"tgt": {}}, "sources": {"s1": "", "s2": "", "s3": ""}}
    rep = transfer_report(evaluation, {"final": (sources, [target])})
    v = rep["targets"]["tgt"]["variants"]["final"]
    assert v["ranking"] == ["s1", "s2", "s3"]
    assert v["rho_gain"] == pytest.approx(1.0)
    assert v["rho_loo"] == pytest.approx(1.0)
    assert v["top1_is_best_gain"] is True
    assert rep["targets"]["tgt"]["transfer"]["s3"] == {
        "gain": pytest.approx(-0.1),
        "loo": pytest.approx(-0.02),
    }
    assert "ranking s1 > s2 > s3" in transfer_markdown(rep)
    both = transfer_report(evaluation, {"final": (sources, [target]), "early": (sources, [target])})
    assert both["targets"]["tgt"]["variants"]["early"]["rho_vs_final"] == pytest.approx(1.0)
    # a tie in measured gain counts for each tied source
    tied = [dict(r, accuracy=0.8) if r["representation"] == "s2" else r for r in rows]
    rep = transfer_report(
        dict(evaluation, rows=tied), {"final": ([sources[1], sources[0], sources[2]], [target])}
    )
    assert rep["targets"]["tgt"]["variants"]["final"]["top1_is_best_gain"] is True
    # a variant that lacks a source or the target prefix is left out, not guessed
    assert transfer_report(evaluation, {"x": (sources[:2], [target])})["targets"]["tgt"]["variants"] == {}


def _blocks_by_hand(key: torch.Tensor, value: torch.Tensor) -> np.ndarray:
    """[layers, 2, hidden]: each layer's K and V averaged over slots, L2-normalized (no init metadata)."""
    out = []
    for k, v in zip(key.double(), value.double(), strict=True):
        pair = [t.mean(dim=1).reshape(-1).numpy() for t in (k, v)]
        out.append([x / np.linalg.norm(x) for x in pair])
    return np.array(out)


def test_prefixes_of_different_depths_compare_over_the_layers_they_share(tmp_path: Path) -> None:
    """Issue 22 item 8: a folder with a trunk prefix (first_layer 1) beside all-layer ones used to make
    /prefixes/similarity a 500 (numpy: all input arrays must have the same shape), disabled or not."""
    from tests.support.fake_encoder import FAKE_SPEC
    from tests.support.http import fake_prefix_bytes

    folder = fill_folder(tmp_path / "prefixes")
    g = torch.Generator().manual_seed(9)
    shape = (FAKE_SPEC.num_layers - 1, FAKE_SPEC.num_heads, 6, FAKE_SPEC.head_dim)
    tk, tv = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    meta = {"backbone_fingerprint": FAKE_SPEC.fingerprint, "position_convention": "none"}
    (folder / "trunk.safetensors").write_bytes(native_bytes(tk, tv, meta, first_layer=1))
    with fake_app(folder) as (client, _fake, runtime):
        assert client.patch("/prefixes/trunk", json={"enabled": False}).status_code == 200
        r = client.get("/prefixes/similarity")
        assert r.status_code == 200, r.text
        doc = r.json()
        names = [p["name"] for p in doc["prefixes"]]
        assert names == ["alpha", "beta", "gamma", "trunk"]
        assert [p["first_layer"] for p in doc["prefixes"]] == [0, 0, 0, 1]
        assert doc["not_comparable"] == []
        bank = runtime.registry.snapshot.bank
        alpha = bank.get("alpha")
        # the reference: mean of the K and V cosines of layer 1, the only layer both act in
        a, t = _blocks_by_hand(alpha.key, alpha.value)[1], _blocks_by_hand(tk, tv)[0]
        expected = float(np.mean([a[0] @ t[0], a[1] @ t[1]]))
        assert doc["matrix"][0][3] == pytest.approx(expected, abs=1e-6)
        assert doc["matrix"][3][0] == doc["matrix"][0][3]
        # all-layer pairs keep the full-depth measure
        beta = bank.get("beta")
        full = np.mean(
            np.sum(_blocks_by_hand(alpha.key, alpha.value) * _blocks_by_hand(beta.key, beta.value), axis=2)
        )
        assert doc["matrix"][0][1] == pytest.approx(float(full), abs=1e-6)
        r = client.get("/prefixes/similarity", params={"target": "trunk"})
        assert r.status_code == 200, r.text
        assert {x["name"] for x in r.json()["ranking"]} == {"alpha", "beta", "gamma"}
        # the flat measure cannot compare prefixes of different lengths: reported, not a 500
        (folder / "long.safetensors").write_bytes(fake_prefix_bytes(seed=8, prefix_len=6))
        runtime.registry.refresh()
        r = client.get("/prefixes/similarity", params={"measure": "flat"})
        assert r.status_code == 200, r.text
        doc = r.json()
        i = [p["name"] for p in doc["prefixes"]].index("long")
        assert doc["matrix"][0][i] is None
        assert (
            doc["matrix"][i][[p["name"] for p in doc["prefixes"]].index("trunk")] is not None
        )  # both 6 slots
        pairs = {(x["a"], x["b"]) for x in doc["not_comparable"]}
        assert ("alpha", "long") in pairs
        assert all("slots" in x["reason"] for x in doc["not_comparable"])
        r = client.get("/prefixes/similarity", params={"measure": "flat", "target": "long"})
        assert r.status_code == 200, r.text
        assert r.json()["ranking"][-1]["similarity"] is None
