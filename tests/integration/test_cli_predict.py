"""`python -m service predict --json` prints what POST /predict returns (tiny random BERT, real files)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app
from service.config import Settings
from service.engine.backbone import Backbone
from tests.support.heads import write_random_head
from tests.support.http import wait_ready

TEXTS = ["good news everyone", "a second, longer text for the batch", "third"]


def test_predict_json_is_the_route_document(
    tiny_bert: Backbone, tiny_bert_path: Path, tmp_path: Path, write_prefix: Callable[..., Path]
) -> None:
    write_prefix(tmp_path, "topic", tiny_bert.spec, prefix_len=3, seed=1)
    write_prefix(tmp_path, "tone", tiny_bert.spec, prefix_len=5, seed=2)
    write_random_head(
        tmp_path, "spam", tiny_bert.spec, ["tone"], ["ham", "spam"], activation="sigmoid", scale=3
    )
    write_random_head(tmp_path, "kind", tiny_bert.spec, ["base", "topic", "tone"], ["a", "b", "c"], scale=3)
    args = ["--model", str(tiny_bert_path), "--prefix-dir", str(tmp_path), "--backend", "torch"]
    result = CliRunner().invoke(app, ["predict", *args, "--json", *TEXTS])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    settings = Settings(model=tiny_bert_path, prefix_dir=tmp_path, backend="torch", device="cpu", watch=False)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        want = client.post("/predict", json={"inputs": TEXTS}).json()
    assert doc["heads"] == want["heads"]
    assert doc["prefixes"] == want["prefixes"]
    assert doc["usage"] == want["usage"]
    for got, ref in zip(doc["data"], want["data"], strict=True):
        for name in ("kind", "spam"):
            assert got["predictions"][name]["label"] == ref["predictions"][name]["label"]
            np.testing.assert_allclose(
                list(got["predictions"][name]["scores"].values()),
                list(ref["predictions"][name]["scores"].values()),
                atol=1e-6,
            )
    plain = CliRunner().invoke(app, ["predict", *args, "--task", "spam", TEXTS[0]])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith("[0] spam ")
    missing = CliRunner().invoke(app, ["predict", *args, "--task", "nope", TEXTS[0]])
    assert missing.exit_code == 2
    assert "unknown head(s) 'nope'; known heads: kind, spam" in missing.output
