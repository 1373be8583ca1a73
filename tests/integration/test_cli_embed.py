"""`python -m service embed --json` prints the POST /embed document, equal to the engine's vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.torch_encoder import TorchEncoder
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.wire.encodings import l2_normalize

REPO = Path(__file__).resolve().parents[2]


def test_embed_json_matches_engine(
    tiny_bert: Backbone, tiny_bert_path: Path, tmp_path: Path, write_prefix: Callable[..., Path]
) -> None:
    write_prefix(tmp_path, "topic", tiny_bert.spec, prefix_len=3, seed=1)
    write_prefix(tmp_path, "sentiment", tiny_bert.spec, prefix_len=5, seed=2)
    texts = ["good news everyone", "a second, longer text for the batch"]
    result = CliRunner().invoke(
        app,
        [
            "embed",
            "--model",
            str(tiny_bert_path),
            "--prefix-dir",
            str(tmp_path),
            "--prefix",
            "topic",
            "--prefix",
            "sentiment",
            "--json",
            *texts,
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [p["name"] for p in doc["prefixes"]] == ["topic", "sentiment"]
    assert all(p["dim"] == 32 and len(p["digest"]) == 64 for p in doc["prefixes"])

    loaded, rejected = scan_folder(
        tmp_path, tiny_bert.spec, PrefixLimits(max_prefix_len=64, max_file_bytes=1 << 20)
    )
    assert not rejected
    bank = PrefixBank.build(loaded)
    enc = TorchEncoder(tiny_bert, chunk_rows=0)
    expected = l2_normalize(
        enc.encode(
            enc.tokenize(texts, max_length=64, truncate=True), bank, bank.indices(["topic", "sentiment"])
        )
    )
    for i, item in enumerate(doc["data"]):
        assert item["index"] == i
        np.testing.assert_allclose(item["embeddings"]["topic"], expected[i, 0], atol=1e-5)
        np.testing.assert_allclose(item["embeddings"]["sentiment"], expected[i, 1], atol=1e-5)
    assert doc["usage"]["prompt_tokens"] > 0


def test_embed_unknown_prefix_is_a_clear_error(
    tiny_bert: Backbone, tiny_bert_path: Path, tmp_path: Path, write_prefix: Callable[..., Path]
) -> None:
    write_prefix(tmp_path, "topic", tiny_bert.spec)
    result = CliRunner().invoke(
        app,
        ["embed", "--model", str(tiny_bert_path), "--prefix-dir", str(tmp_path), "--prefix", "nope", "hi"],
    )
    assert result.exit_code == 2
    assert "unknown prefix(es) 'nope'; known prefixes: base, topic" in result.stderr


@pytest.mark.slow
def test_a_one_text_onnx_command_exits_0(
    minilm: Backbone, minilm_path: Path, tmp_path: Path, write_prefix: Callable[..., Path]
) -> None:
    """One text runs alone, so the ONNX backend starts opening its lone-call session in a background
    thread; the command must let it land before the interpreter exits. It did not: ONNX Runtime
    aborted the process after the output ("terminate called without an active exception", exit -6;
    MiniLM: its session takes long enough to open that the exit always caught it)."""
    folder = tmp_path / "prefixes"
    folder.mkdir()
    write_prefix(folder, "topic", minilm.spec, prefix_len=3, seed=1)
    command = [
        sys.executable,
        "-m",
        "service",
        "embed",
        "--model",
        str(minilm_path),
        "--prefix-dir",
        str(folder),
        "--backend",
        "onnx",
        "--onnx-cache-dir",
        str(tmp_path / "onnx"),
        "--prefix",
        "topic",
        "--json",
        "one text alone",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr
    assert [p["name"] for p in json.loads(done.stdout)["prefixes"]] == ["topic"]
