"""Task heads for tests: head files with seeded weights over a folder's prefixes, and the independent
reference of ``POST /predict``: scikit-learn's ``StandardScaler`` + ``LogisticRegression`` carrying the
same weights, through ``predict`` and ``predict_proba``; ``check_predictions`` holds a live server's
/predict document to it, with the weights read from the head files by safetensors (``head_file``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from safetensors import safe_open
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from service.engine.backbone import BackboneSpec
from service.engine.prefix import BASE_NAME, base_prefix
from service.heads.head import Activation, HeadInput, TaskHead
from service.heads.writer import HeadParams, head_bytes, write_head


def inputs_of(prefix_dir: Path, names: Sequence[str], spec: BackboneSpec) -> list[HeadInput]:
    """The head inputs ``names`` with the digests of the folder's files as they are now (``base``: the
    backbone's digest)."""
    out = []
    for n in names:
        if n == BASE_NAME:
            out.append(HeadInput(n, base_prefix(spec).digest))
        else:
            out.append(
                HeadInput(n, hashlib.sha256((prefix_dir / f"{n}.safetensors").read_bytes()).hexdigest())
            )
    return out


def random_params(
    spec: BackboneSpec,
    inputs: Sequence[HeadInput],
    labels: Sequence[str],
    *,
    activation: Activation = "softmax",
    normalize: bool = True,
    standardize: bool = True,
    seed: int = 0,
    scale: float = 1.0,
    **metadata: Any,
) -> HeadParams:
    """A head with N(0, scale^2) weights (and a seeded standardization) over ``inputs``."""
    rng = np.random.default_rng(seed)
    dim_in = len(inputs) * spec.hidden_size
    rows = 1 if activation == "sigmoid" else len(labels)
    return HeadParams(
        weight=rng.normal(0, scale, (rows, dim_in)),
        bias=rng.normal(0, scale, rows),
        labels=list(labels),
        inputs=list(inputs),
        normalize=normalize,
        activation=activation,
        task=f"test task {seed}",
        mean=rng.normal(0, 0.05, dim_in) if standardize else None,
        scale=rng.uniform(0.05, 0.5, dim_in) if standardize else None,
        metadata=metadata,
    )


def write_random_head(
    prefix_dir: Path, name: str, spec: BackboneSpec, inputs: Sequence[str], labels: Sequence[str], **kw: Any
) -> TaskHead:
    """``prefix_dir/heads/NAME.safetensors`` over the folder's prefixes ``inputs`` (as they are now)."""
    return write_head(
        prefix_dir, name, random_params(spec, inputs_of(prefix_dir, inputs, spec), labels, **kw), spec
    )


def random_head_bytes(
    spec: BackboneSpec, inputs: Sequence[HeadInput], labels: Sequence[str], **kw: Any
) -> bytes:
    return head_bytes(random_params(spec, inputs, labels, **kw), spec)


def sklearn_model(head: TaskHead) -> Pipeline:
    """scikit-learn's own classes carrying the head's weights (not fitted: the attributes are set)."""
    scaler = StandardScaler()
    dim_in = head.dim_in
    scaler.mean_ = head.mean if head.mean is not None else np.zeros(dim_in)
    scaler.scale_ = head.scale if head.scale is not None else np.ones(dim_in)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = dim_in
    scaler.n_samples_seen_ = 1
    lr = LogisticRegression()
    lr.coef_ = head.weight.copy()
    lr.intercept_ = head.bias.copy()
    lr.classes_ = np.asarray(head.labels)
    lr.n_features_in_ = dim_in
    return make_pipeline(scaler, lr)


def reference_predictions(head: TaskHead, concat: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(labels, probabilities [B, labels]) of scikit-learn on ``concat`` [B, dim_in]: the head's inputs'
    vectors (each L2-normalized when the head says so), concatenated in its order."""
    model = sklearn_model(head)
    return [str(x) for x in model.predict(concat)], model.predict_proba(concat)


def head_file(path: Path) -> TaskHead:
    """A head file's tensors and metadata as written, read with safetensors (not the service's parser)."""
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k).astype(np.float64) for k in f.keys()}  # noqa: SIM118 (not a dict)
    return TaskHead(
        name=path.stem,
        digest=hashlib.sha256(path.read_bytes()).hexdigest(),
        labels=tuple(json.loads(meta["labels"])),
        inputs=tuple(HeadInput(i["name"], i["digest"]) for i in json.loads(meta["inputs"])),
        normalize=meta["normalize"] == "true",
        activation=cast(Activation, meta["activation"]),
        weight=t["weight"],
        bias=t["bias"],
        mean=t.get("mean"),
        scale=t.get("scale"),
        task=meta["task"],
        source=str(path),
    )


def predict_embed_body(document: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The ``POST /embed`` request for the vectors behind a /predict ``document`` on ``texts``: every
    input prefix of its heads, in the order of its ``prefixes``, unnormalized."""
    return {"inputs": texts, "prefixes": [p["name"] for p in document["prefixes"]], "normalize": False}


def check_predictions(document: dict[str, Any], texts: list[str], heads: Path, embed: dict[str, Any]) -> None:
    """``document`` (a /predict response for ``texts``) gives, for every head it names, what scikit-learn
    gives with the weights of the head file in ``heads`` on ``embed``'s vectors (the response to
    :func:`predict_embed_body`), at the digests both responses name."""
    digests = {p["name"]: p["digest"] for p in embed["prefixes"]}
    vectors = {n: np.asarray([item["embeddings"][n] for item in embed["data"]], np.float64) for n in digests}
    assert [d["index"] for d in document["data"]] == list(range(len(texts)))
    for entry in document["heads"]:
        head = head_file(heads / f"{entry['name']}.safetensors")
        assert entry["digest"] == head.digest, entry["name"]
        assert entry["labels"] == list(head.labels), (entry["labels"], head.labels)
        assert [(i["name"], i["digest"]) for i in entry["inputs"]] == [
            (i.name, digests[i.name]) for i in head.inputs
        ]
        parts = [vectors[i.name] for i in head.inputs]
        if head.normalize:
            parts = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in parts]
        labels, probs = reference_predictions(head, np.concatenate(parts, axis=1))
        for i, item in enumerate(document["data"]):
            got = item["predictions"][entry["name"]]
            assert got["label"] == labels[i], (entry["name"], i, got, labels[i])
            np.testing.assert_allclose([got["scores"][label] for label in head.labels], probs[i], atol=1e-5)
            np.testing.assert_allclose(got["score"], probs[i].max(), atol=1e-5)
