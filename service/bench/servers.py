"""The servers the benchmarks (and the end-to-end tests) start on 127.0.0.1: our ``serve``, our
``ray-serve``, and the infinity-emb peer, each a :class:`service.procs.ServerProcess`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from service.procs import ServerProcess

SERVE_COMMAND = (sys.executable, "-m", "service", "serve")
RAY_SERVE_COMMAND = (sys.executable, "-m", "service", "ray-serve")
# What ``ray-serve`` prints once every replica is ready (service/serving/ray_launch.py); group 1: the URL.
RAY_READY = re.compile(r"ray-serve ready: \d+ replica\(s\) on (http://\S+) in [\d.]+ s")


def our_server(
    port: int, *, model: Path, prefix_dir: Path, env: Mapping[str, str], log_path: Path
) -> ServerProcess:
    """``python -m service serve`` with the benchmark's settings (as PREFIX_EMBED_* variables)."""
    settings = {
        "PREFIX_EMBED_HOST": "127.0.0.1",
        "PREFIX_EMBED_PORT": str(port),
        "PREFIX_EMBED_MODEL": str(model),
        "PREFIX_EMBED_PREFIX_DIR": str(prefix_dir),
        "PREFIX_EMBED_WATCH": "false",
        "PREFIX_EMBED_LOG_LEVEL": "warning",
        # Benchmarks repeat their texts every round: without this, repeats would be answered from the
        # vector cache and the forward pass would not be measured (a cache benchmark sets it itself).
        "PREFIX_EMBED_VECTOR_CACHE_BYTES": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }
    return ServerProcess(SERVE_COMMAND, log_path=log_path, env=settings, url=f"http://127.0.0.1:{port}")


def ray_serve_process(
    log_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    grace_s: float = 120.0,
    cwd: Path | None = None,
) -> ServerProcess:
    """``python -m service ray-serve --host 127.0.0.1 --port 0 --device cpu *args`` (local Ray): its URL
    is read from the ready line, printed once every replica has loaded; a kill ends Ray's processes too."""
    command = [*RAY_SERVE_COMMAND, "--host", "127.0.0.1", "--port", "0", "--device", "cpu", *args]
    return ServerProcess(
        command, log_path=log_path, env=env, cwd=cwd, url_pattern=RAY_READY, own_group=True, grace_s=grace_s
    )


def infinity_server(
    port: int,
    *,
    executable: Path,
    model: Path,
    device: str,
    served_name: str,
    log_path: Path,
    engine: str = "torch",
) -> ServerProcess:
    """infinity-emb's v2 CLI serving the same local model folder, offline.

    ``engine="optimum"``: ``model`` is a folder holding an ONNX export (see :func:`export_for_optimum`).
    infinity 0.0.78 lists a local folder's files as absolute paths and optimum then refuses them as a
    file name, so the server runs inside that folder with ``--model-id .`` (relative paths)."""
    optimum = engine == "optimum"
    cmd = [
        str(executable),
        "v2",
        "--model-id",
        "." if optimum else str(model),
        "--served-model-name",
        served_name,
        "--engine",
        engine,
        "--device",
        device,
        "--pooling-method",
        "mean",  # what all-MiniLM-L6-v2 was trained with (an ONNX folder has no pooling config)
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": "",  # our checkout must not shadow anything in the peer's environment
    }
    return ServerProcess(
        cmd,
        log_path=log_path,
        env=env,
        url=f"http://127.0.0.1:{port}",
        ready_path="/health",
        cwd=model if optimum else None,
    )


def export_for_optimum(peer_exe: Path, model: Path, folder: Path) -> Path:
    """The ONNX export infinity's optimum engine serves, made once with the peer venv's
    ``optimum-cli export onnx --task feature-extraction --library-name transformers``."""
    if not (folder / "model.onnx").is_file():
        _export(peer_exe, model, folder)
    cap_peer_positions(model, folder)
    return folder


def cap_peer_positions(model: Path, folder: Path) -> bool:
    """infinity 0.0.78's optimum engine truncates at ``config.max_position_embeddings`` tokens: for an
    MPNet/RoBERTa-style model (positions offset by the padding id: 514 entries for the tokenizer's 512
    tokens) its own 512-token warm-up then indexes past the table and the server exits. Where the table
    is longer than the tokenizer's limit, the export's config gets the length the model was trained at
    (sentence-transformers' ``max_seq_length``: mpnet 384, what ours and infinity's torch engine
    truncate at); the graph and its weights are unchanged. True if the config was changed."""
    trained, config_path = model / "sentence_bert_config.json", folder / "config.json"
    tokenizer_path = folder / "tokenizer_config.json"
    if not (trained.is_file() and config_path.is_file() and tokenizer_path.is_file()):
        return False
    config = json.loads(config_path.read_text())
    positions = int(config.get("max_position_embeddings", 0))
    limit = int(json.loads(tokenizer_path.read_text()).get("model_max_length", positions))
    if positions <= limit:
        return False  # BERT-style (MiniLM): the table is the tokenizer's limit
    config["max_position_embeddings"] = min(limit, int(json.loads(trained.read_text())["max_seq_length"]))
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return True


def _export(peer_exe: Path, model: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(peer_exe.parent / "optimum-cli"),
        "export",
        "onnx",
        "--model",
        str(model),
        "--task",
        "feature-extraction",
        "--library-name",
        "transformers",
        str(folder),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
