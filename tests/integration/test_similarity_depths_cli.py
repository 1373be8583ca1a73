"""Issue 22 item 8: ``python -m service similarity`` with prefixes of different depths (and, for the
flat measure, different lengths) in the folder: every pair compared over the layers both act in, or
reported as not comparable; the command never fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from service.cli import app
from service.engine.backbone import Backbone
from service.engine.prefix import LoadedPrefix
from service.registry.similarity import similarity
from service.registry.writer import native_bytes
from tests.support.prefixes import random_kv


def test_similarity_command_over_mixed_depths(
    tiny_bert_path: Path, tiny_bert: Backbone, tmp_path: Path
) -> None:
    spec = tiny_bert.spec
    folder = tmp_path / "prefixes"
    folder.mkdir()
    meta = {"backbone_fingerprint": spec.fingerprint, "position_convention": "none"}
    for name, first, plen, seed in (
        ("all-a", 0, 4, 0),
        ("all-b", 0, 4, 1),
        ("top", 1, 4, 2),
        ("top-long", 1, 6, 3),
    ):
        key, value = random_kv(spec, plen, seed)
        data = native_bytes(key[first:], value[first:], meta, first_layer=first)
        (folder / f"{name}.safetensors").write_bytes(data)
    png = tmp_path / "sim.png"
    runner = CliRunner()
    args = ["similarity", "--prefix", str(folder), "--model", str(tiny_bert_path), "--heatmap", str(png)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    names = [p["name"] for p in doc["prefixes"]]
    assert names == ["all-a", "all-b", "top", "top-long"]
    matrix = np.array(doc["matrix"], dtype=float)
    assert np.isfinite(matrix).all()
    assert doc["not_comparable"] == []
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(app, [*args[:-2], "--measure", "flat"])
    assert r.exit_code == 0, r.output
    flat = json.loads(r.output)
    assert flat["matrix"][0][3] is None
    assert flat["matrix"][2][3] is None
    assert flat["matrix"][0][2] is not None  # same length, different depths: layers 1.. compared
    assert {(x["a"], x["b"]) for x in flat["not_comparable"]} == {
        ("all-a", "top-long"),
        ("all-b", "top-long"),
        ("top", "top-long"),
    }
    r = runner.invoke(app, [*args[:-2], "--target", "top"])
    assert r.exit_code == 0, r.output
    ranking = json.loads(r.output)["ranking"]
    assert {x["name"] for x in ranking} == {"all-a", "all-b", "top-long"}
    # the transfer study uses the same pairwise measure
    key, value = random_kv(spec, 4, 2)
    a = LoadedPrefix("x", "x", key, value, "none", "x", "native")
    t = LoadedPrefix("t", "t", key[1:], value[1:], "none", "t", "native", first_layer=1)
    same = similarity(a, t)  # the same tensors in the layers both act in
    assert same is not None
    assert abs(same - 1.0) < 1e-9
