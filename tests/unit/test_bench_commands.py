"""``python -m service bench ...`` hands each benchmark the settings its flags and variables make (the
benchmarks themselves are replaced by recorders: they run for minutes); ``bench ray`` without Ray."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.support.imports import loaded_after


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL", "DEVICE", "DTYPE", "MAX_BATCH_TOKENS", "FORWARD_CHUNK_ROWS", "POOLING"):
        monkeypatch.delenv(f"PREFIX_EMBED_{name}", raising=False)


class Stop(Exception):
    """Raised by a recorder once it has what the command passed."""


def recorder(seen: dict[str, Any], result: Any = None) -> Any:
    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, args=args)
        if result is None:
            raise Stop
        return result

    return record


def run(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["bench", *args], env=env)


def test_bench_engine_rows_default_to_one_call_and_trunk_to_the_served_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("service.bench.engine.run_engine_bench", recorder(seen))
    monkeypatch.setattr("service.bench.trunk.run_trunk_bench", recorder(seen))
    assert isinstance(run(["engine", "--device", "cpu", "--texts", "4"]).exception, Stop)
    (settings,) = seen["args"]
    assert (settings.device, settings.forward_chunk_rows, seen["n_texts"]) == ("cpu", 0, 4)
    assert isinstance(run(["engine", "--chunk-rows", "3", "--dtype", "bfloat16"]).exception, Stop)
    (settings,) = seen["args"]
    assert (settings.forward_chunk_rows, settings.dtype) == (3, "bfloat16")
    assert isinstance(run(["engine", "--trunk"]).exception, Stop)
    assert seen["args"][0].forward_chunk_rows is None  # 0 -> the CPU row chunks as served
    assert isinstance(run(["engine", "--trunk", "--forward-chunk-rows", "8"]).exception, Stop)
    assert seen["args"][0].forward_chunk_rows == 8


def test_bench_service_runs_on_the_cpu_unless_a_flag_or_variable_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("service.bench.service_bench.ServiceBench", recorder(seen))
    out = ["--out-dir", str(tmp_path)]
    assert isinstance(run(["service", *out, "--model", str(tmp_path), "--chunk-rows", "2"]).exception, Stop)
    (cfg,) = seen["args"]
    assert (cfg.device, cfg.model, cfg.chunk_rows, cfg.max_batch_tokens) == ("cpu", tmp_path, 2, 32768)
    env = {"PREFIX_EMBED_DEVICE": "cuda", "PREFIX_EMBED_MAX_BATCH_TOKENS": "4096"}
    assert isinstance(run(["service", *out, "--concurrency", "1,2"], env=env).exception, Stop)
    (cfg,) = seen["args"]
    assert (cfg.device, cfg.max_batch_tokens, cfg.concurrency, cfg.model) == ("cuda", 4096, [1, 2], None)
    assert isinstance(run(["service", *out, "--device", "cuda:1"], env=env).exception, Stop)
    assert seen["args"][0].device == "cuda:1"


def test_bench_soak_and_onnx_get_their_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("service.bench.soak.run_soak", recorder(seen))
    assert isinstance(run(["soak", "--backend", "onnx", "--duration", "2"]).exception, Stop)
    (cfg,) = seen["args"]
    assert (cfg.backend, cfg.duration_s, cfg.model) == ("onnx", 2.0, None)
    monkeypatch.setattr("service.bench.onnx.run_onnx_bench", recorder(seen))
    args = ["onnx", "--onnx-cache-dir", str(tmp_path), "--pooling", "cls", "--threads", "1"]
    assert isinstance(run(args).exception, Stop)
    (settings,) = seen["args"]
    assert (settings.backend, settings.onnx_cache_dir, settings.pooling) == ("onnx", tmp_path, "cls")
    assert seen["threads"] == 1


def test_bench_ray_needs_ray_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the extra, installed or not
    result = run(["ray", "--rounds", "1"])
    assert result.exit_code == 2
    assert 'bench ray needs Ray Serve: pip install "prefix-embed[ray]"' in result.stderr
    assert run(["ray", "--help"]).exit_code == 0


def test_bench_ray_passes_model_folder_and_writes_the_result(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # present; the servers are faked too
    seen: dict[str, Any] = {}
    doc = {"startup_s": {"serve": 1.0}, "summary": {"ray1": {}}, "rounds": 1}
    monkeypatch.setattr("service.bench.ray_serve.run_ray_bench", recorder(seen, doc))
    out = tmp_path / "r" / "ray.json"
    args = ["ray", "--out", str(out), "--model", str(tmp_path), "--prefix-dir", "p", "--rounds", "1"]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert seen["args"] == (tmp_path, Path("p"), tmp_path / "r" / "ray-logs")
    assert (seen["rounds"], seen["n_texts"]) == (1, 256)
    assert json.loads(out.read_text()) == doc
    assert json.loads(result.stdout) == {"startup_s": {"serve": 1.0}, "summary": {"ray1": {}}}


def test_the_bench_commands_import_no_ray() -> None:
    assert loaded_after("service.cli, service.bench.commands, service.bench.ray_serve", "ray") == []
