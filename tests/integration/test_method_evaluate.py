"""``evaluate`` on a small real sample: every representation probed, table and plot written, cache used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.engine.backbone import Backbone
from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from service.method.data import load_table
from service.method.evaluate import evaluate, make_target, markdown_table, plot
from service.method.probes import score_probe
from service.method.represent import PLAIN, encode_all
from tests.support.prefixes import random_kv

DATA = Path(__file__).parent.parent / "data"
pytestmark = pytest.mark.slow


def _random_prefix(name: str, backbone: Backbone, seed: int) -> LoadedPrefix:
    key, value = random_kv(backbone.spec, 4, seed, scale=0.5)
    return LoadedPrefix(name, f"{seed:064d}", key, value, "peft", name, "native", {})


@pytest.fixture(scope="module")
def result(minilm: Backbone, tmp_path_factory: pytest.TempPathFactory) -> dict:
    encoder = TorchEncoder(minilm, pooling="mean")
    sources = [_random_prefix("p1", minilm, 1), _random_prefix("p2", minilm, 2)]
    target = make_target(load_table(DATA / "sms_spam_200.jsonl"), test_fraction=0.3, n_train=80, n_test=40)
    cache = tmp_path_factory.mktemp("cache")
    out = evaluate(encoder, [target], sources, max_length=48, cache_dir=cache, cs=(1.0,), progress=False)
    calls = encoder.forward_calls
    again = evaluate(encoder, [target], sources, max_length=48, cache_dir=cache, cs=(1.0,), progress=False)
    assert encoder.forward_calls == calls  # every vector came from the cache
    assert again["rows"] == out["rows"]
    return out


def test_every_representation_has_a_row(result: dict) -> None:
    rows = {r["representation"]: r for r in result["rows"]}
    assert list(rows) == [
        "plain",
        "p1",
        "p2",
        "concat",
        "concat - p1",
        "concat - p2",
        "concat binary",
        "concat int8",
    ]
    assert rows["concat"]["dim"] == 768
    assert rows["concat"]["bytes_per_text"] == 768 * 4
    assert rows["concat binary"]["bytes_per_text"] == 96
    assert rows["concat int8"]["bytes_per_text"] == 768
    assert rows["concat - p1"]["dropped"] == "p1"
    info = result["targets"]["sms_spam_200"]
    assert (info["n_train"], info["n_test"]) == (80, 40)
    # spam vs ham is easy for MiniLM features: far above the majority class
    assert rows["plain"]["accuracy"] >= info["majority_accuracy"] + 0.25
    for r in rows.values():
        assert 0.0 <= r["macro_f1"] <= r["accuracy"] + 0.5


def test_rows_are_the_probe_on_the_engine_vectors(result: dict, minilm: Backbone) -> None:
    target = make_target(load_table(DATA / "sms_spam_200.jsonl"), test_fraction=0.3, n_train=80, n_test=40)
    encoder = TorchEncoder(minilm, pooling="mean")
    tr = encode_all(encoder, [], target.train.texts, max_length=48, progress=False)[PLAIN]
    te = encode_all(encoder, [], target.test.texts, max_length=48, progress=False)[PLAIN]
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    score = score_probe(norm(tr), target.train.labels, norm(te), target.test.labels, cs=(1.0,))
    plain = next(r for r in result["rows"] if r["representation"] == "plain")
    assert plain["accuracy"] == pytest.approx(score.accuracy)
    assert plain["macro_f1"] == pytest.approx(score.macro_f1)


def test_table_and_plot(result: dict, tmp_path: Path) -> None:
    table = markdown_table(result)
    assert "#### sms_spam_200 (train 80, test 40, 2 classes" in table
    assert table.count("\n| ") == 1 + len(result["rows"])  # the header, then one line per row
    assert "| concat binary | binary | 768 | 96 |" in table
    plot(result, tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_train_then_similarity_on_a_tiny_model(tiny_bert_path: Path, tmp_path: Path) -> None:
    """``python -m service train`` and ``similarity`` end to end (tiny random model: seconds)."""
    runner = CliRunner()
    outs = []
    for name, seed in (("spam-a", 0), ("spam-b", 1)):
        out = tmp_path / "prefixes" / f"{name}.safetensors"
        args = [
            "train",
            "--data",
            str(DATA / "sms_spam_200.jsonl"),
            "--out",
            str(out),
            "--name",
            name,
            "--no-calibrate",
        ]
        args += [
            "--model",
            str(tiny_bert_path),
            "--max-examples",
            "60",
            "--prefix-len",
            "2",
            "--max-length",
            "24",
            "--first-layer",  # the shipped recipe's depth is 3; the tiny model has 2 layers
            "1",
        ]
        args += ["--max-steps", "4", "--eval-every", "2", "--seed", str(seed), "--no-progress"]
        args += ["--checkpoint-step", "2", "--checkpoint-dir", str(tmp_path / "ckpt")]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
        assert summary["task"] == name
        assert summary["checkpoints"] == [2]
        outs.append(out)
    assert (tmp_path / "ckpt" / "spam-a.step2.safetensors").is_file()
    png = tmp_path / "sim.png"
    r = runner.invoke(
        app,
        [
            "similarity",
            "--prefix",
            str(tmp_path / "prefixes"),
            "--model",
            str(tiny_bert_path),
            "--heatmap",
            str(png),
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [p["name"] for p in doc["prefixes"]] == ["spam-a", "spam-b"]
    assert doc["matrix"][0][0] == pytest.approx(1.0)
    assert doc["matrix"][0][1] == doc["matrix"][1][0]
    assert png.is_file()
    out_dir = tmp_path / "results"
    args = [
        "evaluate",
        "--prefix",
        str(tmp_path / "prefixes"),
        "--target",
        str(DATA / "vader_tweets_160.jsonl"),
    ]
    args += [
        "--model",
        str(tiny_bert_path),
        "--n-train",
        "40",
        "--n-test",
        "20",
        "--c",
        "1.0",
        "--max-length",
        "24",
    ]
    args += ["--out-dir", str(out_dir), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    result = json.loads((out_dir / "evaluation.json").read_text())
    assert list(result["sources"]) == ["spam-a", "spam-b"]
    reps = [row["representation"] for row in result["rows"]]
    assert reps[:4] == ["plain", "spam-a", "spam-b", "concat"]
    assert "| concat int8 | int8 | 64 | 64 |" in (out_dir / "evaluation.md").read_text()
    assert (out_dir / "evaluation.png").is_file()
