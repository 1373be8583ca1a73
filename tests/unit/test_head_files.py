"""Head files: the writer's bytes validate and are deterministic; every bad file is refused naming the
file and the reason; a head's probabilities are scikit-learn's predict_proba with the same weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from service.engine.prefix import base_prefix
from service.errors import InvalidHeadFile
from service.heads.format import head_checksum, parse_head
from service.heads.head import HeadInput
from service.heads.writer import HeadParams, head_bytes
from service.registry.limits import PrefixLimits
from service.registry.writer import canonical_safetensors, metadata_strings
from tests.support.fake_encoder import FAKE_SPEC
from tests.support.heads import random_params, reference_predictions

SOURCE = "heads/h.safetensors"
INPUTS = [HeadInput("base", base_prefix(FAKE_SPEC).digest), HeadInput("alpha", "a" * 64)]
LIMITS = PrefixLimits()


def parse(data: bytes) -> Any:
    return parse_head("h", data, FAKE_SPEC, source=SOURCE, limits=LIMITS)


def test_written_heads_parse_back_exactly_and_deterministically() -> None:
    params = random_params(FAKE_SPEC, INPUTS, ["a", "b", "c"], seed=3, fit={"c": 0.1})
    data = head_bytes(params, FAKE_SPEC)
    assert head_bytes(params, FAKE_SPEC) == data  # same head, same bytes, same digest
    head = parse(data)
    assert head.labels == ("a", "b", "c")
    assert head.inputs == tuple(INPUTS)
    assert head.normalize is True
    assert head.activation == "softmax"
    assert head.dim_in == 16
    np.testing.assert_array_equal(head.weight, np.asarray(params.weight, dtype=np.float32))
    assert head.metadata["fit"] == {"c": 0.1}
    assert head.metadata["backbone_fingerprint"] == FAKE_SPEC.fingerprint


def rewritten(params: HeadParams, **meta: Any) -> bytes:
    """The writer's file with metadata entries replaced (None: removed); checksum kept valid."""
    tensors = {"weight": torch.tensor(params.weight, dtype=torch.float32), "bias": torch.tensor(params.bias)}
    tensors["bias"] = tensors["bias"].to(torch.float32)
    header = parse(head_bytes(params, FAKE_SPEC)).metadata
    header |= meta
    strings = metadata_strings({k: v for k, v in header.items() if v is not None})
    return canonical_safetensors(tensors, strings)


def with_tensors(**tensors: torch.Tensor) -> bytes:
    """A head file holding exactly ``tensors`` (a correct checksum), otherwise valid metadata."""
    params = random_params(FAKE_SPEC, INPUTS, ["neg", "pos"], activation="sigmoid", standardize=False)
    meta = parse(head_bytes(params, FAKE_SPEC)).metadata
    meta["content_sha256"] = head_checksum({k: t.numpy().tobytes() for k, t in tensors.items()})
    return canonical_safetensors(tensors, metadata_strings(meta))


SIGMOID = random_params(FAKE_SPEC, INPUTS, ["neg", "pos"], activation="sigmoid", standardize=False)
W, B = torch.zeros(1, 16), torch.zeros(1)
BAD: list[tuple[str, Callable[[], bytes], str]] = [
    ("empty", lambda: b"", "empty file"),
    ("pickle", lambda: b"\x80\x04\x95" + b"\x00" * 20, "pickle"),
    ("torn", lambda: head_bytes(SIGMOID, FAKE_SPEC)[:-7], "not a valid safetensors file"),
    ("no checksum", lambda: rewritten(SIGMOID, content_sha256=None), "content_sha256 is missing"),
    ("altered", lambda: rewritten(SIGMOID, content_sha256="0" * 64), "does not match the tensors"),
    ("format", lambda: rewritten(SIGMOID, format="prefix-embed/1"), "is not 'prefix-embed-head/1'"),
    ("backbone", lambda: rewritten(SIGMOID, backbone_fingerprint="bert-other"), "this server runs"),
    ("activation", lambda: rewritten(SIGMOID, activation="relu"), "activation 'relu'"),
    ("no task", lambda: rewritten(SIGMOID, task=" "), "'task'"),
    ("labels not a list", lambda: rewritten(SIGMOID, labels="neg,pos"), "'labels' must be a JSON list"),
    ("labels repeat", lambda: rewritten(SIGMOID, labels=["a", "a"]), "labels are not unique ('a' repeat)"),
    ("one label", lambda: rewritten(SIGMOID, labels=["a"]), "1 labels; a head has 2.."),
    ("three labels, sigmoid", lambda: rewritten(SIGMOID, labels=["a", "b", "c"]), "exactly 2 labels"),
    ("inputs", lambda: rewritten(SIGMOID, inputs=[{"name": "alpha"}]), "exactly 'name' and 'digest'"),
    ("input digest", lambda: rewritten(SIGMOID, inputs=[{"name": "x", "digest": "z"}]), "hex sha256"),
    (
        "input name",
        lambda: rewritten(SIGMOID, inputs=[{"name": "../x", "digest": "a" * 64}]),
        "bad prefix name",
    ),
    (
        "input twice",
        lambda: rewritten(SIGMOID, inputs=[INPUTS[1].__dict__, INPUTS[1].__dict__]),
        "more than once",
    ),
    ("dims", lambda: rewritten(SIGMOID, inputs=[INPUTS[1].__dict__]), "needs [1, 8]"),
    ("normalize", lambda: rewritten(SIGMOID, normalize="yes"), "'normalize' must be"),
    ("nan", lambda: with_tensors(weight=torch.full((1, 16), float("nan")), bias=B), "weight contains NaN"),
    ("huge", lambda: with_tensors(weight=torch.full((1, 16), 1e9), bias=B), "magnitude over"),
    ("int dtype", lambda: with_tensors(weight=torch.zeros(1, 16, dtype=torch.int32), bias=B), "float dtype"),
    ("bias shape", lambda: with_tensors(weight=W, bias=torch.zeros(2)), "bias is [2], expected [1]"),
    ("mean alone", lambda: with_tensors(weight=W, bias=B, mean=torch.zeros(16)), "come together"),
    (
        "scale <= 0",
        lambda: with_tensors(weight=W, bias=B, mean=torch.zeros(16), scale=torch.zeros(16)),
        "> 0",
    ),
    ("extra tensor", lambda: with_tensors(weight=W, bias=B, key=torch.zeros(1)), "a head has weight, bias"),
    ("no bias", lambda: with_tensors(weight=W), "a head has weight, bias"),
]


@pytest.mark.parametrize(("case", "make", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_head_file_is_refused_naming_the_file_and_why(
    case: str, make: Callable[[], bytes], fragment: str
) -> None:
    with pytest.raises(InvalidHeadFile) as err:
        parse(make())
    assert err.value.message.startswith(SOURCE), err.value.message
    assert fragment in err.value.message, err.value.message


def test_size_limit_and_name_are_checked() -> None:
    data = head_bytes(SIGMOID, FAKE_SPEC)
    with pytest.raises(InvalidHeadFile, match="over the 100-byte limit"):
        parse_head("h", data, FAKE_SPEC, source=SOURCE, limits=PrefixLimits(max_file_bytes=100))
    with pytest.raises(InvalidHeadFile, match="bad head name 'Bad Name'"):
        parse_head("Bad Name", data, FAKE_SPEC, source=SOURCE, limits=LIMITS)


def test_metadata_nesting_is_bounded() -> None:
    deep = json.loads("[" * 40 + "]" * 40)
    with pytest.raises(InvalidHeadFile, match="nested 40 levels deep"):
        parse(rewritten(SIGMOID, fit=deep))


@pytest.mark.parametrize(
    ("labels", "activation", "normalize", "standardize"),
    [
        (["neg", "pos"], "sigmoid", True, True),
        (["spam", "ham"], "sigmoid", False, False),  # label order is the file's, not sorted
        (["a", "b", "c", "d", "e"], "softmax", True, True),
        (["x", "y", "z"], "softmax", False, False),
    ],
)
def test_probabilities_are_scikit_learns_predict_proba_with_the_same_weights(
    labels: list[str], activation: Any, normalize: bool, standardize: bool
) -> None:
    head = parse(
        head_bytes(
            random_params(
                FAKE_SPEC,
                INPUTS,
                labels,
                activation=activation,
                normalize=normalize,
                standardize=standardize,
                scale=3,
            ),
            FAKE_SPEC,
        )
    )
    vectors = np.random.default_rng(7).normal(0, 2, (64, 2, 8)).astype(np.float32)
    concat = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True) if normalize else vectors
    # float64 in: scikit-learn then computes in float64 as the head does (it keeps float32 input float32
    # through the scaler, a 1e-7 difference: the HTTP tests check that path to 1e-5)
    want_labels, want = reference_predictions(head, concat.reshape(64, -1).astype(np.float64))
    got = head.probabilities(vectors)
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)
    assert [labels[k] for k in got.argmax(1)] == want_labels
    assert len(set(want_labels)) > 1  # the weights separate the texts: the check is not vacuous


def test_extreme_logits_give_finite_probabilities() -> None:
    head = parse(
        head_bytes(random_params(FAKE_SPEC, INPUTS, ["a", "b"], activation="sigmoid", scale=1e5), FAKE_SPEC)
    )
    probs = head.probabilities(np.random.default_rng(0).normal(0, 50, (16, 2, 8)).astype(np.float32))
    assert np.isfinite(probs).all()
    assert np.allclose(probs.sum(1), 1)
