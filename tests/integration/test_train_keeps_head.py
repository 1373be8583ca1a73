"""``train`` keeps its head (issue 21 item 3): beside the prefix it writes ``heads/TASK.safetensors``,
its input that prefix at the written file's digest, its dev and test accuracy recorded; a server on
the folder serves it, and ``POST /predict`` reproduces the recorded accuracies (tiny random BERT)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app
from service.config import Settings
from service.method.data import load_table, protocol_splits
from tests.support.http import wait_ready

DATA = Path(__file__).parent.parent / "data" / "sms_spam_200.jsonl"
TASK = "sms_spam_200"  # the data file's name


def test_train_writes_its_head_and_the_server_predicts_its_recorded_accuracy(
    tiny_bert_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "spam.safetensors"
    args = ["--data", str(DATA), "--out", str(out), "--model", str(tiny_bert_path), "--first-layer", "1",
            "--prefix-len", "2", "--max-length", "24", "--max-steps", "4", "--eval-every", "2",
            "--max-examples", "120", "--holdout", "0.3", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    head_file = tmp_path / "heads" / f"{TASK}.safetensors"
    (written,) = summary["heads"]
    assert written["file"] == str(head_file)
    metrics = written["metrics"]
    # the loop's own dev measurement (torch, argmax of the trained layer) and the head file's agree
    assert metrics["dev"]["accuracy"] == summary["dev_metrics"]["accuracy"]
    assert metrics["test"]["n"] == summary["source_value"]["n_test"]

    settings = Settings(
        model=tiny_bert_path,
        prefix_dir=tmp_path,
        backend="torch",
        device="cpu",
        max_input_tokens=24,
        watch=False,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        (listed,) = client.get("/heads").json()["heads"]
        assert listed["name"] == TASK
        assert listed["available"] is True
        assert listed["inputs"] == [{"name": "spam", "digest": hashlib.sha256(out.read_bytes()).hexdigest()}]
        assert listed["normalize"] is False
        _, dev, test = protocol_splits(
            load_table(DATA), holdout_fraction=0.3, max_examples=120, dev_fraction=0.15, seed=0
        )
        assert test is not None
        for split, recorded in ((dev, metrics["dev"]), (test, metrics["test"])):
            r = client.post("/predict", json={"inputs": split.texts, "tasks": [TASK]})
            assert r.status_code == 200, r.text
            got = [item["predictions"][TASK]["label"] for item in r.json()["data"]]
            correct = sum(g == y for g, y in zip(got, split.labels, strict=True))
            assert (correct, len(split)) == (recorded["correct"], recorded["n"])
