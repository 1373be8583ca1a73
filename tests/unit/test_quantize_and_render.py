"""Wire encodings decode back to what they encode; the /embed document has the contract's shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engine.prefix import LoadedPrefix
from service.wire.document import render_embed_document
from service.wire.encodings import decode_base64_float, decode_binary, encode_vector, int8_quantize


def _prefix(name: str) -> LoadedPrefix:
    kv = torch.zeros(1, 1, 2, 4)
    return LoadedPrefix(name, f"sha-{name}", kv, kv, "peft", f"{name}.safetensors", "native")


def test_base64_is_little_endian_float32() -> None:
    x = np.array([1.5, -2.25, 0.0, 3e-8], dtype=np.float32)
    enc = encode_vector(x, "base64")
    assert isinstance(enc, str)
    np.testing.assert_array_equal(decode_base64_float(enc), x)


def test_binary_is_packed_sign_bits_msb_first() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(19).astype(np.float32)
    enc = encode_vector(x, "binary")
    assert isinstance(enc, str)
    np.testing.assert_array_equal(decode_binary(enc, 19), x > 0)
    # MSB first: [+, -, -, -, -, -, -, -] -> 0b10000000
    assert decode_binary(encode_vector(np.array([1.0] + [-1.0] * 7, dtype=np.float32), "binary"), 8)[0]
    assert encode_vector(np.array([1.0] + [-1.0] * 7, dtype=np.float32), "binary") == "gA=="


def test_int8_scales_by_max_abs_and_keeps_cosine() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 64)).astype(np.float32)
    q = int8_quantize(x).astype(np.float32)
    assert np.abs(q).max() == 127
    cos = (q * x).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(x, axis=1)
    assert cos.min() > 0.999


def test_render_separate_and_concat() -> None:
    prefixes = [_prefix("b"), _prefix("a")]
    vectors = np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 2, 4) + 1
    doc = render_embed_document(model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=7)
    assert doc["prefixes"] == [
        {"name": "b", "digest": "sha-b", "dim": 4},
        {"name": "a", "digest": "sha-a", "dim": 4},
    ]
    assert doc["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    first = doc["data"][0]["embeddings"]
    assert list(first) == ["b", "a"]
    np.testing.assert_allclose(np.linalg.norm(first["a"]), 1.0, rtol=1e-6)
    concat = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=7, combine="concat", normalize=False
    )
    np.testing.assert_array_equal(concat["data"][1]["embedding"], vectors[1].reshape(-1))
    normed = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=7, combine="concat"
    )
    e = np.array(normed["data"][0]["embedding"])
    np.testing.assert_allclose(np.linalg.norm(e), 1.0, rtol=1e-6)  # unit length overall
    np.testing.assert_allclose(np.linalg.norm(e[:4]), np.linalg.norm(e[4:]), rtol=1e-6)  # equal shares


def test_document_json_round_trips_float32_exactly_and_refuses_non_finite() -> None:
    import json

    from service.errors import InferenceFailed
    from service.wire.document import dumps_document

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3, 2, 16)).astype(np.float32)
    prefixes = [_prefix("a"), _prefix("b")]
    doc = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=1, normalize=False
    )
    parsed = json.loads(dumps_document(doc))  # the stdlib parser as the independent reader
    for i in range(3):
        got = np.array(parsed["data"][i]["embeddings"]["b"], dtype=np.float32)
        np.testing.assert_array_equal(got, vectors[i, 1])  # bit-exact after float32 -> JSON -> float32
    int8 = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=1, encoding="int8"
    )
    ints = json.loads(dumps_document(int8))["data"][0]["embeddings"]["a"]
    assert all(isinstance(x, int) and -127 <= x <= 127 for x in ints)
    bad = vectors.copy()
    bad[1, 0, 3] = np.nan
    with pytest.raises(InferenceFailed, match="non-finite"):
        render_embed_document(model="m", prefixes=prefixes, vectors=bad, prompt_tokens=1)
