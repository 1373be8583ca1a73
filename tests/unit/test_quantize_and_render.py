"""Wire encodings: float/base64 decode back to the vectors; the calibrated int8/uint8 equal
sentence-transformers' ``quantize_embeddings`` with the same ranges, binary/ubinary are
``np.packbits`` of the signs around the calibrated centre; the /embed document has the contract's
shape and names the calibration each prefix was quantized with."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch

from service.engine.calibration import Calibration, statistics, unit_vectors
from service.engine.prefix import LoadedPrefix
from service.errors import InferenceFailed
from service.wire.document import dumps_document, render_embed_document
from service.wire.encodings import (
    UNCALIBRATED,
    binary_transform,
    codes,
    decode_base64_float,
    encode_float,
    int8_quantize,
    pack_bits,
    projection_matrix,
    unpack_bits,
)

PINNED_384_0 = "f8c29631c03b741b"  # sha256 prefix of projection_matrix(384, 0), float32 bytes


def _prefix(name: str) -> LoadedPrefix:
    kv = torch.zeros(1, 1, 2, 4)
    return LoadedPrefix(name, f"sha-{name}", kv, kv, "peft", f"{name}.safetensors", "native")


def _calibration(unit: np.ndarray, digest: str = "c" * 64, projection: int | None = None) -> Calibration:
    centre, lo, hi, scale = statistics(unit)
    return Calibration(
        centre, lo, hi, "mean", "fp", "v" * 64, 32, digest=digest, scale=scale, projection=projection
    )


def _reference_projection(dim: int, seed: int) -> np.ndarray:
    """The documented ±1 matrix, entry by entry: bit k of PCG64(seed)'s raw 64-bit words (each word's
    bytes little-endian, each byte's bits most significant first), 1 -> +1, 0 -> -1."""
    words = [int(w) for w in np.random.PCG64(seed).random_raw((dim * dim + 63) // 64)]
    out = np.empty((dim, dim), dtype=np.float32)
    for k in range(dim * dim):
        byte = (words[k // 64] >> (8 * ((k % 64) // 8))) & 0xFF
        out[k // dim, k % dim] = 1.0 if (byte >> (7 - k % 8)) & 1 else -1.0
    return out


def _st_levels(x: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """An independent element-by-element reading of sentence-transformers 6.3's scalar quantization:
    ``steps = (max - min) / 255`` in float32 (0 -> 1), ``clip(floor((x - min) / steps), 0, 255)``."""
    out = np.empty(x.shape, dtype=np.int64)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            start = np.float32(ranges[0, j])
            step = np.float32(np.float32(ranges[1, j]) - start) / np.float32(255)
            step = np.float32(1) if step == 0 else step
            level = math.floor(np.float32(np.float32(x[i, j]) - start) / step)
            out[i, j] = min(255, max(0, level))
    return out


@pytest.fixture
def vectors() -> tuple[np.ndarray, np.ndarray]:
    """(calibration set, new vectors): unit vectors with an offset mean, as mean pooling gives."""
    rng = np.random.default_rng(7)
    offset = rng.normal(0, 0.3, 48)
    cal = unit_vectors((rng.standard_normal((400, 48)) + offset).astype(np.float32))
    new = unit_vectors((rng.standard_normal((30, 48)) + offset).astype(np.float32))
    return cal, new


def test_calibrated_int8_and_uint8_equal_the_sentence_transformers_formula(vectors) -> None:
    cal_set, new = vectors
    cal = _calibration(cal_set)
    np.testing.assert_array_equal(cal.ranges, np.vstack((cal_set.min(0), cal_set.max(0))))  # ST's ranges
    want = _st_levels(new, cal.ranges)
    u8, i8 = codes(new, "uint8", cal), codes(new, "int8", cal)
    assert u8.dtype == np.uint8
    assert i8.dtype == np.int8
    np.testing.assert_array_equal(u8.astype(np.int64), want)
    np.testing.assert_array_equal(i8.astype(np.int64), want - 128)
    # a level means its bucket: min + level * step <= x (a value past the calibrated range saturates)
    step = (cal.hi - cal.lo) / 255
    inside = (new >= cal.lo) & (new <= cal.hi)
    assert (cal.lo + want * step <= new + 1e-6)[inside].all()
    assert (want[new < cal.lo] == 0).all()
    assert (want[new > cal.hi] == 255).all()


def test_calibrated_encodings_equal_sentence_transformers_itself(vectors) -> None:
    quantization = pytest.importorskip("sentence_transformers.util.quantization")
    cal_set, new = vectors
    cal = _calibration(cal_set)
    for precision in ("int8", "uint8"):
        want = quantization.quantize_embeddings(new, precision, ranges=cal.ranges)
        np.testing.assert_array_equal(codes(new, precision, cal), want)
        np.testing.assert_array_equal(  # ranges from the same calibration embeddings
            codes(new, precision, cal),
            quantization.quantize_embeddings(new, precision, calibration_embeddings=cal_set),
        )
    for each in (cal, _calibration(cal_set, projection=12345)):
        for precision in ("binary", "ubinary"):
            want = quantization.quantize_embeddings(binary_transform(new, each), precision)
            np.testing.assert_array_equal(pack_bits(codes(new, precision, each), precision), want)


def test_the_projection_is_exactly_its_seed_s_documented_matrix() -> None:
    for dim, seed in ((48, 0), (48, 2**64 - 1), (13, 7)):
        np.testing.assert_array_equal(projection_matrix(dim, seed), _reference_projection(dim, seed))
    a, b = projection_matrix(48, 1), projection_matrix(48, 2)
    assert abs(float((a * b).mean())) < 0.05  # another seed: another matrix
    assert abs(float(a.mean())) < 0.05  # balanced signs
    # pinned: stored codes must keep meaning what they meant (numpy keeps PCG64's raw stream stable)
    assert hashlib.sha256(projection_matrix(384, 0).tobytes()).hexdigest()[:16] == PINNED_384_0


def test_projected_binary_is_packbits_of_the_signs_of_the_projected_standardized_vector(vectors) -> None:
    cal_set, new = vectors
    cal = _calibration(cal_set, projection=99)
    np.testing.assert_allclose(cal.scale, cal_set.std(0), rtol=1e-5)
    t = ((new - cal_set.mean(0)) / cal_set.std(0)) @ _reference_projection(48, 99).astype(np.float64)
    ubinary = pack_bits(codes(new, "ubinary", cal), "ubinary")
    np.testing.assert_array_equal(ubinary, np.packbits(t > 0, axis=-1))
    np.testing.assert_array_equal(
        pack_bits(codes(new, "binary", cal), "binary").astype(np.int16), ubinary.astype(np.int16) - 128
    )


def test_binary_is_packbits_of_the_sign_around_the_calibrated_centre(vectors) -> None:
    """A calibration without a projection: the signs of the dimensions around their centre."""
    cal_set, new = vectors
    cal = _calibration(cal_set)
    np.testing.assert_allclose(cal.centre, cal_set.mean(0), atol=1e-6)
    ubinary = pack_bits(codes(new, "ubinary", cal), "ubinary")
    binary = pack_bits(codes(new, "binary", cal), "binary")
    np.testing.assert_array_equal(ubinary, np.packbits(new > cal.centre, axis=-1))
    np.testing.assert_array_equal(binary.astype(np.int16), ubinary.astype(np.int16) - 128)
    assert binary.dtype == np.int8
    assert ubinary.shape == (30, 6)
    np.testing.assert_array_equal(unpack_bits(binary[0], 48, "binary"), new[0] > cal.centre)
    # centring matters here: the offset mean makes most signs at 0 the same for every text
    balanced = (new > cal.centre).mean(0)
    assert np.abs((new > 0).mean(0) - 0.5).mean() > np.abs(balanced - 0.5).mean()


def test_the_uncalibrated_fallback_is_the_per_vector_int8_and_the_sign_at_zero(vectors) -> None:
    _, new = vectors
    np.testing.assert_array_equal(codes(new, "int8", None), int8_quantize(new))
    np.testing.assert_array_equal(codes(new, "uint8", None), int8_quantize(new).astype(np.int16) + 128)
    assert np.abs(int8_quantize(new)).max(axis=1).tolist() == [127] * len(new)
    np.testing.assert_array_equal(
        pack_bits(codes(new, "ubinary", None), "ubinary"), np.packbits(new > 0, axis=-1)
    )
    # MSB first: [+, -, -, -, -, -, -, -] -> 0b10000000
    assert pack_bits(codes(np.array([[1.0] + [-1.0] * 7]), "ubinary", None), "ubinary").tolist() == [[128]]


def test_base64_is_little_endian_float32() -> None:
    x = np.array([1.5, -2.25, 0.0, 3e-8], dtype=np.float32)
    enc = encode_float(x, "base64")
    assert isinstance(enc, str)
    np.testing.assert_array_equal(decode_base64_float(enc), x)


def test_a_quantized_document_names_each_prefix_calibration_and_joins_concat_codes(vectors) -> None:
    cal_set, new = vectors
    a, b = _prefix("a"), _prefix("b")
    cal_b = _calibration(cal_set[:, :48], digest="d" * 64)
    raw = np.stack([new * 3.0, new * 0.5], axis=1)  # [B, 2, 48]: lengths differ, directions do not
    for enc in ("int8", "uint8", "binary", "ubinary"):
        doc = render_embed_document(
            model="m", prefixes=[a, b], vectors=raw, prompt_tokens=1, calibrations=[None, cal_b], encoding=enc
        )
        assert [p["calibration"] for p in doc["prefixes"]] == [UNCALIBRATED, "d" * 64]
        want_a, want_b = codes(new, enc, None), codes(new, enc, cal_b)
        if enc in ("binary", "ubinary"):
            joined = pack_bits(np.concatenate([want_a, want_b], axis=-1), enc)
            want_a, want_b = pack_bits(want_a, enc), pack_bits(want_b, enc)
        else:
            joined = np.concatenate([want_a, want_b], axis=-1)
        parsed = json.loads(dumps_document(doc))  # lists of integers
        for i in range(len(new)):
            assert parsed["data"][i]["embeddings"]["a"] == want_a[i].tolist()
            assert parsed["data"][i]["embeddings"]["b"] == want_b[i].tolist()
        concat = render_embed_document(
            model="m", prefixes=[a, b], vectors=raw, prompt_tokens=1, calibrations=[None, cal_b],
            encoding=enc, combine="concat", normalize=False,
        )  # fmt: skip
        np.testing.assert_array_equal(np.stack([d["embedding"] for d in concat["data"]]), joined)
    floats = render_embed_document(
        model="m", prefixes=[a], vectors=raw[:, :1], prompt_tokens=1, calibrations=[None]
    )
    assert "calibration" not in floats["prefixes"][0]  # float vectors use none


def test_render_separate_and_concat() -> None:
    prefixes = [_prefix("b"), _prefix("a")]
    vectors = np.arange(2 * 2 * 4, dtype=np.float32).reshape(2, 2, 4) + 1
    none = [None, None]
    doc = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=7, calibrations=none
    )
    assert doc["prefixes"] == [
        {"name": "b", "digest": "sha-b", "dim": 4},
        {"name": "a", "digest": "sha-a", "dim": 4},
    ]
    assert doc["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    first = doc["data"][0]["embeddings"]
    assert list(first) == ["b", "a"]
    np.testing.assert_allclose(np.linalg.norm(first["a"]), 1.0, rtol=1e-6)
    concat = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=7, calibrations=none, combine="concat",
        normalize=False,
    )  # fmt: skip
    np.testing.assert_array_equal(concat["data"][1]["embedding"], vectors[1].reshape(-1))
    normed = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=7, calibrations=none, combine="concat"
    )
    e = np.array(normed["data"][0]["embedding"])
    np.testing.assert_allclose(np.linalg.norm(e), 1.0, rtol=1e-6)  # unit length overall
    np.testing.assert_allclose(np.linalg.norm(e[:4]), np.linalg.norm(e[4:]), rtol=1e-6)  # equal shares


def test_document_json_round_trips_float32_exactly_and_refuses_non_finite() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3, 2, 16)).astype(np.float32)
    prefixes, none = [_prefix("a"), _prefix("b")], [None, None]
    doc = render_embed_document(
        model="m", prefixes=prefixes, vectors=vectors, prompt_tokens=1, calibrations=none, normalize=False
    )
    parsed = json.loads(dumps_document(doc))  # the stdlib parser as the independent reader
    for i in range(3):
        got = np.array(parsed["data"][i]["embeddings"]["b"], dtype=np.float32)
        np.testing.assert_array_equal(got, vectors[i, 1])  # bit-exact after float32 -> JSON -> float32
    bad = vectors.copy()
    bad[1, 0, 3] = np.nan
    with pytest.raises(InferenceFailed, match="non-finite"):
        render_embed_document(model="m", prefixes=prefixes, vectors=bad, prompt_tokens=1, calibrations=none)
