"""``python -m service fit`` and ``POST /heads/{name}/fit`` against a real server process (tiny random
BERT, real prefix files): the command's head is hot-loaded and served at once, the route writes the
same bytes from the same examples and seed, ``/predict`` equals scikit-learn fitted on the served
``/embed`` vectors, and a fit killed with SIGKILL (the command, or the server mid-job) leaves no head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from service.engine.backbone import Backbone
from service.procs import ServerProcess
from tests.support import prefixes
from tests.support.server_process import REPO, TEST_ENV, serve_process, stop_gracefully
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": "Bearer root"}
GOOD = ["great", "lovely", "happy", "fine", "excellent"]
BAD = ["awful", "terrible", "sad", "broken", "horrible"]
THINGS = ["the film", "this phone", "the service", "my day", "the food", "our trip"]


def labelled(n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        word = rng.choice(GOOD if label == "pos" else BAD)
        out.append({"text": f"{rng.choice(THINGS)} was {word} ({seed}.{i})", "label": label})
    return out


def write_jsonl(path: Path, examples: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


def fit_command(model: Path, folder: Path, data: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "service", "fit", "--data", str(data), "--name", name,
        "--prefix-dir", str(folder), "--model", str(model), "--backend", "torch", *extra,
    ]  # fmt: skip


def run_env() -> dict[str, str]:
    return {**os.environ, **TEST_ENV}


def server_args(model: Path, folder: Path) -> tuple[str, ...]:
    return ("--model", str(model), "--prefix-dir", str(folder), "--backend", "torch", "--admin-key", "root")


@pytest.fixture
def served(tmp_path: Path, tiny_bert_path: Path, tiny_bert: Backbone) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path / "prefixes"
    folder.mkdir()
    for i, name in enumerate(("alpha", "beta")):
        prefixes.write_prefix(folder, name, tiny_bert.spec, prefix_len=2 + i, seed=i)
    server = serve_process(tmp_path / "server.log", *server_args(tiny_bert_path, folder)).start().wait_ready()
    try:
        yield server, folder
    finally:
        if server.running():
            stop_gracefully(server)


def head_listing(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/heads")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["heads"]}


def job_done(client: httpx.Client, url: str) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        doc: dict[str, Any] = client.get(url, headers=ADMIN).json()
        return doc if doc["state"] != "running" else {}

    return wait_until(done, 120, f"{url} finished")


def served_concat(client: httpx.Client, texts: list[str], inputs: list[str]) -> np.ndarray:
    r = client.post("/embed", json={"inputs": texts, "prefixes": inputs})
    assert r.status_code == 200, r.text
    return np.array([np.concatenate([d["embeddings"][n] for n in inputs]) for d in r.json()["data"]])


def fit_json(
    model: Path, folder: Path, examples: list[dict[str, str]], name: str, *extra: str
) -> dict[str, Any]:
    """``python -m service fit --json`` on ``examples`` (a .jsonl beside the folder): its summary."""
    data = write_jsonl(folder.parent / f"{name}.jsonl", examples)
    cmd = fit_command(model, folder, data, name, *extra, "--json", "--no-progress")
    done = subprocess.run(cmd, env=run_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_command_and_the_route_write_the_same_head_served_at_once(
    served: tuple[ServerProcess, Path], tiny_bert_path: Path
) -> None:
    server, folder = served
    examples = labelled(80, seed=0)
    result = fit_json(tiny_bert_path, folder, examples, "mood")
    head_file = folder / "heads" / "mood.safetensors"
    from_cli = head_file.read_bytes()
    with server.client() as client:
        # hot-load: the running server serves the head the command wrote
        listed = wait_until(lambda: head_listing(client).get("mood", {}), 30, "mood listed")
        assert listed["available"], listed
        assert listed["digest"] == result["head"]["digest"]

        # the route, same examples and seed: the same bytes
        r = client.post("/heads/mood/fit", json={"examples": examples, "select": "auto"}, headers=ADMIN)
        assert r.status_code == 202, r.text
        doc = job_done(client, r.json()["url"])
        assert doc["state"] == "succeeded", doc
        assert doc["result"]["head"]["digest"] == result["head"]["digest"]
    assert head_file.read_bytes() == from_cli


def test_a_fixed_input_head_predicts_as_scikit_learn_on_the_served_vectors(
    served: tuple[ServerProcess, Path], tiny_bert_path: Path
) -> None:
    server, folder = served
    examples = labelled(80, seed=2)
    result = fit_json(tiny_bert_path, folder, examples, "tone", "--select", "base,alpha")
    assert result["inputs"] == ["base", "alpha"]
    with server.client() as client:
        wait_until(lambda: head_listing(client).get("tone", {}).get("available"), 30, "tone served")
        texts, labels = [e["text"] for e in examples], [e["label"] for e in examples]
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=result["c"], max_iter=5000))
        ref.fit(served_concat(client, texts, ["base", "alpha"]), labels)
        new = [e["text"] for e in labelled(16, seed=3)]
        p = client.post("/predict", json={"inputs": new, "tasks": ["tone"]})
        assert p.status_code == 200, p.text
        want = ref.predict_proba(served_concat(client, new, ["base", "alpha"]))
        got = np.array(
            [[d["predictions"]["tone"]["scores"][c] for c in ref.classes_] for d in p.json()["data"]]
        )
        np.testing.assert_allclose(got, want, atol=1e-4)


def killed_mid_fit(proc: ServerProcess, seen: Callable[[], bool]) -> None:
    """Wait until ``seen()`` says the fit ``proc`` runs (or serves) is under way, then SIGKILL it."""
    wait_until(seen, 120, "the fit under way")
    proc.kill()


def test_a_fit_killed_mid_way_leaves_no_head(
    served: tuple[ServerProcess, Path], tiny_bert_path: Path, tmp_path: Path
) -> None:
    server, folder = served
    heads = folder / "heads"
    data = write_jsonl(tmp_path / "big.jsonl", labelled(4000, seed=4))
    command = ServerProcess(
        fit_command(tiny_bert_path, folder, data, "big"),
        log_path=tmp_path / "fit.log",
        env=TEST_ENV,
        cwd=REPO,
    ).start()
    killed_mid_fit(command, lambda: "embed" in command.log())
    assert not (heads / "big.safetensors").exists()

    with server.client() as client:
        examples = labelled(4000, seed=5)
        r = client.post("/heads/huge/fit", json={"examples": examples}, headers=ADMIN)
        assert r.status_code == 202, r.text
        url = r.json()["url"]

        def embedding() -> bool:
            return client.get(url, headers=ADMIN).json()["progress"]["done"] > 0

        killed_mid_fit(server, embedding)
    assert not (heads / "huge.safetensors").exists()
    leftovers = sorted(p.name for p in heads.iterdir()) if heads.exists() else []
    assert all(name.startswith(".") for name in leftovers), leftovers  # at most an unlinked temp
    # a fresh server on the folder serves no half-written head
    again = serve_process(tmp_path / "again.log", *server_args(tiny_bert_path, folder)).start().wait_ready()
    try:
        with again.client() as client:
            assert set(head_listing(client)) == set()
    finally:
        stop_gracefully(again)
