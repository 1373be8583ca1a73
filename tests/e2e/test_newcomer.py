"""A newcomer's first session, scripted (issue 22, "Done when"): clone, the serve install, train a task
with the defaults, drop it in, the default /v1 model keeps its dimension and its vectors, DELETE it
with the admin key, then every example of the documentation against a live server on defaults.

Everything runs from a ``git clone`` of HEAD with its own ``.venv`` (``make install``: the
``serve_install`` fixture, shared with test_serve_install.py), in a newcomer's environment (no
``PREFIX_EMBED_*`` setting) with a fresh ONNX cache, so the first start exports its graphs as a
reader's would. Each phase's wall time is printed (``pytest -s``).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors import safe_open

from service.config import default_model_path
from service.method.corpora import load_builtin
from tests.support.doc_examples import examples
from tests.support.example_checks import Live, run_example
from tests.support.example_plan import GIVEN_FILES, plan, problems
from tests.support.install import ServeInstall, assert_lean_cpu_install, newcomer_env
from tests.support.server_process import ServerProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ADMIN_KEY = "newcomer-admin-key"
PER_CLASS = 40  # 5 classes x 40 = 200 examples: few examples, the default recipe's steps


def small_task(path: Path) -> Path:
    """200 labelled questions (TREC, five coarse classes, 40 each; the data package of `make test`) as
    the CSV a newcomer brings: columns text, label."""
    data = load_builtin("trec")
    by_label: dict[str, list[int]] = {}
    for i in random.Random(0).sample(range(len(data.texts)), len(data.texts)):
        by_label.setdefault(data.labels[i], []).append(i)
    chosen = sorted(i for label in ("DESC", "ENTY", "HUM", "LOC", "NUM") for i in by_label[label][:PER_CLASS])
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows([data.texts[i], data.labels[i]] for i in chosen)
    return path


def serve(install: ServeInstall, log: Path, env: dict[str, str]) -> ServerProcess:
    """``python -m service serve`` from the clone, on its defaults but port 0 (the prefix folder: the
    clone's ``prefixes/``, a copy of the shipped one)."""
    command = [str(install.python), "-m", "service", "serve", "--port", "0"]
    server = ServerProcess(command, log_path=log, cwd=install.root, env=env, inherit_env=False)
    return server.start().wait_ready(900)  # a first start exports the ONNX graphs


def model_entry(client: httpx.Client, name: str) -> dict[str, Any]:
    models = client.get("/v1/models").json()["data"]
    return next(m for m in models if m["id"] == name)


def v1_vector(client: httpx.Client, model: str, text: str) -> np.ndarray:
    r = client.post("/v1/embeddings", json={"model": model, "input": [text]})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["data"][0]["embedding"])


@pytest.mark.timeout(2400)  # the install, a training run, an ONNX export: minutes each on 2 busy CPUs
def test_a_newcomer_clones_installs_trains_serves_and_every_example_works(
    serve_install: ServeInstall, tmp_path: Path
) -> None:
    times: dict[str, float] = {"clone + make install": serve_install.seconds}
    clock = time.monotonic()

    def lap(phase: str) -> None:
        nonlocal clock
        times[phase], clock = time.monotonic() - clock, time.monotonic()

    root, python = serve_install.root, str(serve_install.python)
    assert_lean_cpu_install(serve_install)
    env = newcomer_env(
        PATH=f"{root / '.venv' / 'bin'}:{newcomer_env()['PATH']}",  # as if the venv were activated
        PREFIX_EMBED_ONNX_CACHE_DIR=str(tmp_path / "onnx-cache"),  # fresh: the first start exports
    )
    config = json.loads((default_model_path() / "config.json").read_text())
    hidden = config["hidden_size"]

    # train a small task with the defaults (the shipped recipe): it comes out at the shipped depth
    out = tmp_path / "x.safetensors"
    data = small_task(tmp_path / "questions.csv")
    train = [python, "-m", "service", "train", "--data", str(data), "--name", "x", "--out", str(out)]
    train += ["--threads", "1"]  # not a recipe value: two torch threads on 2 busy CPUs ran 5x slower
    done = subprocess.run(train, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr, done.stderr  # no all-layer warning, no small-class warning
    summary = json.loads(done.stdout)
    assert summary["first_layer"] == 3, summary
    with safe_open(root / "prefixes" / "sentiment.safetensors", "np") as f:
        shipped = f.metadata()
    with safe_open(out, "np") as f:
        meta, key = f.metadata(), f.get_tensor("key")
    assert meta["first_layer"] == shipped["first_layer"] == "3"
    assert meta["position_convention"] == shipped["position_convention"] == "none"
    assert key.shape[0] == config["num_hidden_layers"] - 3  # the layers it acts in: 3..L-1
    assert "content_sha256" in meta
    lap("train (200 examples, default recipe)")

    # serve with an admin key; drop the prefix in: the default /v1 model keeps its dimension and vectors
    # (the vector cache off, so that the vectors after the drop are computed again)
    keyed = {**env, "PREFIX_EMBED_ADMIN_KEY": ADMIN_KEY, "PREFIX_EMBED_VECTOR_CACHE_BYTES": "0"}
    server = serve(serve_install, tmp_path / "admin.log", keyed)
    lap("serve: first start (ONNX export) to /ready")
    try:
        client = server.client()
        served = json.loads((root / "prefixes" / "models.json").read_text())
        default, pinned = served["default"], served["models"][served["default"]]
        before = model_entry(client, default)
        assert before["dimension"] == len(pinned["prefixes"]) * hidden
        vector = v1_vector(client, default, "the quarterly results beat expectations")
        shutil.copy(out, root / "prefixes" / "x.safetensors")  # dropped in, as a reader would
        wait_until(
            lambda: "x" in {p["name"] for p in client.get("/prefixes").json()["prefixes"]}, 60, "x loaded"
        )
        after = model_entry(client, default)
        assert after["dimension"] == before["dimension"]
        assert after["prefixes"] == before["prefixes"]
        assert "x" in {m["id"] for m in client.get("/v1/models").json()["data"]}  # served by its name
        again = v1_vector(client, default, "the quarterly results beat expectations")
        assert again.shape == (before["dimension"],)
        np.testing.assert_allclose(again, vector, atol=1e-6)
        own = v1_vector(client, "x", "the quarterly results beat expectations")
        assert own.shape == (hidden,)
        assert not np.allclose(own, v1_vector(client, "base", "the quarterly results beat expectations"))
        # DELETE: refused without the admin key, done with it
        assert client.delete("/prefixes/x").status_code == 401
        r = client.delete("/prefixes/x", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] == "x"
        assert not (root / "prefixes" / "x.safetensors").exists()
        assert "x" not in {m["id"] for m in client.get("/v1/models").json()["data"]}
        assert model_entry(client, default)["dimension"] == before["dimension"]
    finally:
        server.stop(60)
    lap("drop in, /v1 checks, DELETE")

    # every example of the documentation, against a server on defaults
    found = plan(examples(root))
    assert not problems(found), "\n".join(problems(found))
    for name, source in GIVEN_FILES.items():
        shutil.copy(root / source, root / name)
    server = serve(serve_install, tmp_path / "defaults.log", env)
    lap("serve: second start (graphs cached) to /ready")
    try:
        live = Live(server.url, root, env, sys.executable, hidden)
        for example, kind in found.run:
            run_example(example, kind, live)
    finally:
        server.stop(60)
    lap(f"{len(found.run)} examples run ({len(found.skipped)} listed as unrunnable)")
    times["total"] = sum(times.values())
    print(
        "\nnewcomer run, wall seconds per phase:\n" + "\n".join(f"  {k}: {v:.0f}" for k, v in times.items())
    )
