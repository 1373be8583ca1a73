"""``POST /predict`` on the real engine (all-MiniLM-L6-v2 and the shipped S = 3 prefixes, in-process):

- predictions equal scikit-learn's ``predict_proba`` with the same weights on the served ``/embed``
  vectors of each head's inputs, concatenated (labels exactly, probabilities to 1e-5), for a binary
  head, a multi-class head and a head over ``base`` plus two prefixes;
- 3 heads over 2 prefixes of one depth are one model call (the forward-call metric);
- a head is hot-loaded, turns unavailable (with the reason) when its input prefix's file changes and
  available again when it is restored; a bad head file is rejected while the others serve.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.engine.backbone import Backbone
from service.heads.format import parse_head
from service.heads.head import HeadInput
from service.heads.writer import head_bytes
from service.method.head_fit import probe_head
from service.method.probes import search_probe
from service.registry.limits import PrefixLimits
from tests.support.heads import reference_predictions, write_random_head
from tests.support.http import assert_error, wait_ready
from tests.support.metrics import metric_value
from tests.support.waiting import wait_until

SHIPPED = Path(__file__).resolve().parents[2] / "prefixes"
PREFIXES = ("question-type", "sentiment", "sms-spam")  # all first_layer 3
TEXTS = [
    "I loved this film, the actors were wonderful",
    "WINNER!! Claim your free prize now by texting 80086",
    "Who was the first president of the United States?",
    "The service was slow and the food was cold.",
    "see you at the station at 6",
    "How many miles is it from London to Paris?",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, minilm: Backbone) -> Path:
    folder = tmp_path_factory.mktemp("prefixes")
    for name in PREFIXES:
        shutil.copyfile(SHIPPED / f"{name}.safetensors", folder / f"{name}.safetensors")
    spec = minilm.spec
    # binary (sigmoid), multi-class (softmax, unnormalized inputs), base + two prefixes (normalized)
    write_random_head(folder, "spam", spec, ["sms-spam"], ["ham", "spam"], activation="sigmoid", scale=0.3)
    write_random_head(
        folder, "qtype", spec, ["question-type"], ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
        seed=1, scale=0.3, normalize=False,
    )  # fmt: skip
    write_random_head(folder, "pair", spec, ["question-type", "sms-spam"], ["x", "y"], seed=3, scale=0.3)
    return folder


@pytest.fixture(scope="module")
def client(folder: Path, minilm_path: Path, minilm: Backbone) -> Iterator[TestClient]:
    settings = Settings(model=minilm_path, prefix_dir=folder, backend="torch", device="cpu", dtype="float32")
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        upload_fitted_head(c, minilm, "mix", ["base", "sentiment", "sms-spam"])
        yield c


def upload_fitted_head(client: TestClient, minilm: Backbone, name: str, inputs: list[str]) -> None:
    """A standardized logistic regression fitted on the served vectors of TEXTS (3 classes), through
    the method's converter, uploaded with PUT /heads/NAME."""
    emb = client.post("/embed", json={"inputs": TEXTS, "prefixes": inputs}).json()
    x = np.array([np.concatenate([item["embeddings"][n] for n in inputs]) for item in emb["data"]])
    fitted = search_probe(x, ["a", "b", "c"] * 2, cs=(1.0,), folds=2)
    digests = {p["name"]: p["digest"] for p in emb["prefixes"]}
    params = probe_head(
        fitted, [HeadInput(n, digests[n]) for n in inputs], task="three classes", normalize=True, metadata={}
    )
    r = client.put(f"/heads/{name}", content=head_bytes(params, minilm.spec))
    assert r.status_code == 201, r.text


def heads(client: TestClient) -> dict[str, dict]:
    return {h["name"]: h for h in client.get("/heads").json()["heads"]}


@pytest.mark.parametrize("task", ["spam", "qtype", "mix"])
def test_predict_equals_scikit_learn_on_the_served_embed_vectors(
    client: TestClient, folder: Path, minilm: Backbone, task: str
) -> None:
    listed = heads(client)[task]
    names = [i["name"] for i in listed["inputs"]]
    r = client.post("/predict", json={"inputs": TEXTS, "tasks": [task]})
    assert r.status_code == 200, r.text
    got = [item["predictions"][task] for item in r.json()["data"]]
    emb = client.post(
        "/embed", json={"inputs": TEXTS, "prefixes": names, "normalize": listed["normalize"]}
    ).json()
    concat = np.array([np.concatenate([item["embeddings"][n] for n in names]) for item in emb["data"]])
    data = (folder / listed["source"]).read_bytes()
    head = parse_head(task, data, minilm.spec, source=listed["source"], limits=PrefixLimits())
    labels, probs = reference_predictions(head, concat)
    assert [g["label"] for g in got] == labels
    scores = np.array([[g["scores"][label] for label in head.labels] for g in got])
    np.testing.assert_allclose(scores, probs, atol=1e-5, rtol=0)
    assert len(set(labels)) > 1  # the texts get different answers: the comparison is not vacuous


def test_three_heads_over_two_prefixes_of_one_depth_are_one_model_call(client: TestClient) -> None:
    before = metric_value(client.get("/metrics").text, "prefix_embed_forward_calls_total")
    fresh = [f"{t} (a text no earlier request sent)" for t in TEXTS[:4]]  # the vector cache has none of them
    r = client.post("/predict", json={"inputs": fresh, "tasks": ["spam", "qtype", "pair"]})
    assert r.status_code == 200, r.text
    assert [p["name"] for p in r.json()["prefixes"]] == ["sms-spam", "question-type"]
    assert metric_value(client.get("/metrics").text, "prefix_embed_forward_calls_total") == before + 1


def test_hot_load_availability_follows_the_input_prefix_and_bad_heads_are_rejected(
    client: TestClient, folder: Path, minilm: Backbone
) -> None:
    write_random_head(
        folder, "late", minilm.spec, ["sentiment"], ["neg", "pos"], activation="sigmoid", seed=5
    )
    wait_until(lambda: heads(client).get("late", {}).get("available"), 20, "the new head is served")
    assert client.post("/predict", json={"inputs": TEXTS[:2], "tasks": ["late"]}).status_code == 200
    original = (folder / "sentiment.safetensors").read_bytes()
    (folder / "sentiment.safetensors").write_bytes(
        (folder / "sms-spam.safetensors").read_bytes()
    )  # retrained
    wait_until(lambda: not heads(client)["late"]["available"], 20, "the head turns unavailable")
    reason = heads(client)["late"]["reason"]
    assert "input sentiment is at version" in reason
    r = client.post("/predict", json={"inputs": TEXTS[:2], "tasks": ["late"]})
    assert_error(r, 409, "head_unavailable", "head 'late' is unavailable", "input sentiment is at version")
    assert heads(client)["mix"]["available"] is False  # every head over it, with the same reason
    (folder / "sentiment.safetensors").write_bytes(original)
    wait_until(lambda: heads(client)["late"]["available"], 20, "the head is available again")
    assert client.post("/predict", json={"inputs": TEXTS[:2], "tasks": ["late", "mix"]}).status_code == 200
    (folder / "heads" / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    wait_until(lambda: client.get("/heads").json()["rejected"], 20, "the bad head file is rejected")
    assert client.get("/heads").json()["rejected"][0]["source"] == "heads/broken.safetensors"
    r = client.post("/predict", json={"inputs": TEXTS[:2]})
    assert r.status_code == 200, r.text
    assert [h["name"] for h in r.json()["heads"]] == ["late", "mix", "pair", "qtype", "spam"]
