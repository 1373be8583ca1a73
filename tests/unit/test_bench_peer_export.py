"""The infinity peer's ONNX export folder (service/bench/servers.py): its position limit is capped only
where infinity 0.0.78 would index past the position table (an offset MPNet/RoBERTa table)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.bench.servers import cap_peer_positions


def _folders(tmp_path: Path, positions: int, tokenizer_limit: int) -> tuple[Path, Path]:
    model, export = tmp_path / "model", tmp_path / "export"
    model.mkdir()
    export.mkdir()
    (model / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 384}))
    (export / "config.json").write_text(json.dumps({"max_position_embeddings": positions, "model_type": "x"}))
    (export / "tokenizer_config.json").write_text(json.dumps({"model_max_length": tokenizer_limit}))
    return model, export


@pytest.mark.parametrize(
    ("positions", "limit", "expected"), [(514, 512, 384), (512, 512, 512), (514, 256, 256)]
)
def test_cap_only_where_the_table_is_offset(
    tmp_path: Path, positions: int, limit: int, expected: int
) -> None:
    model, export = _folders(tmp_path, positions, limit)
    assert cap_peer_positions(model, export) is (expected != positions)
    config = json.loads((export / "config.json").read_text())
    assert config["max_position_embeddings"] == expected
    assert config["model_type"] == "x"
    assert cap_peer_positions(model, export) is False  # idempotent
