"""Calibration: measured over a corpus through the encoder, written into the prefix file (covered by
its digest) and the base file, verified when read (a torn, altered, stale or foreign one is refused),
applied by /embed's quantized encodings and named in the response, reported by GET /prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.engine.calibration import CalibrationCorpus, vectors_identity
from service.engine.prefix import base_prefix
from service.registry.calibration import METADATA_KEY, base_file_name, parse_record, record_text
from service.registry.calibration_files import calibrate_files, calibrate_prefix_file
from service.registry.limits import PrefixLimits
from service.registry.registry import PrefixRegistry
from service.registry.tensors import parse_safetensors
from service.registry.writer import native_bytes
from service.wire.encodings import codes, l2_normalize, pack_bits
from tests.support.fake_encoder import FAKE_SPEC, FakeEncoder
from tests.support.http import fake_app
from tests.support.prefixes import random_kv, write_prefix

CORPUS = CalibrationCorpus(
    "test-corpus", tuple(f"calibration text {i} about {i % 7} things" for i in range(60))
)


def _folder(tmp_path: Path, calibrate: tuple[str, ...] = ("alpha",), base: bool = True) -> Path:
    folder = tmp_path / "prefixes"
    folder.mkdir()
    for i, name in enumerate(("alpha", "beta")):
        write_prefix(folder, name, FAKE_SPEC, seed=i)
    paths = [folder / f"{n}.safetensors" for n in calibrate]
    calibrate_files(paths, FakeEncoder(), CORPUS, pooling="mean", base_folder=folder if base else None)
    return folder


def _unit(fake: FakeEncoder, prefix, texts) -> np.ndarray:
    return l2_normalize(np.stack([fake.expected(t, prefix) for t in texts]))


def test_the_written_calibration_is_the_statistics_of_the_corpus_unit_vectors(tmp_path: Path) -> None:
    folder = _folder(tmp_path, calibrate=(), base=False)
    measured = PrefixRegistry(folder, FAKE_SPEC).load().bank  # the fake's vectors follow the digest
    calibrate_files([folder / "alpha.safetensors"], FakeEncoder(), CORPUS, pooling="mean", base_folder=folder)
    snap = PrefixRegistry(folder, FAKE_SPEC).load()
    assert snap.rejected == ()
    fake = FakeEncoder()
    for name in ("alpha", "base"):
        prefix = snap.bank.get(name)
        cal = prefix.calibration
        assert cal is not None
        # the engine's vectors of the corpus (as they were measured), normalized
        unit = _unit(fake, measured.get(name), CORPUS.texts)
        np.testing.assert_allclose(cal.centre, unit.mean(0), atol=1e-6)
        np.testing.assert_array_equal(cal.lo, unit.min(0).astype(np.float32))
        np.testing.assert_array_equal(cal.hi, unit.max(0).astype(np.float32))
        assert (cal.pooling, cal.fingerprint, cal.max_tokens) == ("mean", FAKE_SPEC.fingerprint, 32)
        assert cal.corpus["sha256"] == CORPUS.sha256
        assert cal.corpus["texts"] == 60
        assert cal.identity == vectors_identity(prefix)
        np.testing.assert_allclose(cal.scale, unit.std(0), rtol=1e-5)
        assert cal.projection == int(cal.identity[:16], 16)  # binary's projection: the prefix's own
    assert snap.bank.get("alpha").calibration.projection != snap.bank.get("base").calibration.projection
    assert snap.bank.get("beta").calibration is None  # a file without one still serves
    assert "calibration" not in snap.bank.get("alpha").metadata  # its own field, not metadata


def test_calibrating_changes_the_digest_and_keeps_the_tensors_and_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    path = write_prefix(folder, "alpha", FAKE_SPEC, seed=3, task="demo", labels=["a", "b"])
    before = PrefixRegistry(folder, FAKE_SPEC).load().bank.get("alpha")
    cal = calibrate_prefix_file(path, FakeEncoder(), CORPUS, pooling="mean")
    after = PrefixRegistry(folder, FAKE_SPEC).load().bank.get("alpha")
    assert after.digest != before.digest
    assert after.calibration is not None
    assert after.calibration.digest == cal.digest
    assert np.array_equal(after.key.numpy(), before.key.numpy())
    assert after.metadata == before.metadata
    fake = FakeEncoder()
    again = calibrate_prefix_file(path, fake, CORPUS, pooling="mean")  # current: left as it is
    assert again.digest == cal.digest
    assert fake.calls == []
    assert PrefixRegistry(folder, FAKE_SPEC).load().bank.get("alpha").digest == after.digest
    other = CalibrationCorpus("other", CORPUS.texts[:20])
    (w,) = calibrate_files([path], fake, other, pooling="mean")  # another corpus: measured again
    assert w.written
    assert w.calibration.corpus["name"] == "other"
    (w,) = calibrate_files([path], fake, other, pooling="mean", force=True)
    assert w.written


def _rewrite_record(path: Path, change) -> None:
    data = path.read_bytes()
    tensors, meta, _ = parse_safetensors(data, path.name, PrefixLimits())
    record = json.loads(meta[METADATA_KEY])
    change(record)
    meta = {k: v for k, v in meta.items() if k not in ("format", "content_sha256")}
    meta[METADATA_KEY] = json.dumps(record)
    path.write_bytes(native_bytes(tensors["key"], tensors["value"], meta))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r.update(centre=r["min"]), "digest does not match"),  # altered, digest kept
        (lambda r: r.update(digest="0" * 64), "digest does not match"),
        (lambda r: r.update(max="!!"), "digest does not match"),
        (lambda r: r.pop("min"), "lacks min"),
        (lambda r: r.update(backbone_fingerprint="bert-L12-H768-0"), "calibration measured backbone"),
    ],
)
def test_a_bad_record_refuses_the_file_and_the_last_good_version_serves(
    tmp_path: Path, change, reason
) -> None:
    folder = _folder(tmp_path, base=False)
    registry = PrefixRegistry(folder, FAKE_SPEC)
    good = registry.load().bank.get("alpha")
    _rewrite_record(folder / "alpha.safetensors", change)
    snap = registry.refresh()
    assert [r.source for r in snap.rejected] == ["alpha.safetensors"]
    assert reason in snap.rejected[0].reason
    assert snap.bank.get("alpha") is good  # stale, still the good version
    assert "alpha" in snap.stale


def test_a_calibration_copied_onto_other_tensors_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, base=False)
    data = (folder / "alpha.safetensors").read_bytes()
    _, meta, _ = parse_safetensors(data, "x", PrefixLimits())
    key, value = random_kv(FAKE_SPEC, 4, seed=99)  # re-trained tensors, old metadata kept
    kept = {k: v for k, v in meta.items() if k not in ("format", "content_sha256")}
    (folder / "alpha.safetensors").write_bytes(native_bytes(key, value, kept))
    snap = PrefixRegistry(folder, FAKE_SPEC).load()
    assert "measured other tensors" in snap.rejected[0].reason
    assert "python -m service calibrate" in snap.rejected[0].reason
    # calibrating it again repairs it
    calibrate_prefix_file(folder / "alpha.safetensors", FakeEncoder(), CORPUS, pooling="mean")
    assert PrefixRegistry(folder, FAKE_SPEC).load().bank.get("alpha").calibration is not None


def test_the_base_file_is_read_live_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    folder = _folder(tmp_path, calibrate=(), base=False)
    registry = PrefixRegistry(folder, FAKE_SPEC)
    first = registry.load()
    assert first.bank.get("base").calibration is None
    assert registry.refresh() is first  # nothing changed: nothing published
    calibrate_files([], FakeEncoder(), CORPUS, pooling="mean", base_folder=folder)
    base_path = folder / base_file_name(FAKE_SPEC)
    assert base_path.name == f"base.{FAKE_SPEC.fingerprint}.calibration.json"
    snap = registry.refresh()
    cal = snap.bank.get("base").calibration
    assert cal is not None
    assert snap.bank.get("base").digest == base_prefix(FAKE_SPEC).digest  # the vectors' name is unchanged
    assert registry.refresh() is snap
    record = json.loads(base_path.read_text())
    base_path.write_text(json.dumps({**record, "pooling": "cls"}))  # altered without a new digest
    bad = registry.refresh()
    assert [r.source for r in bad.rejected] == [base_path.name]
    assert bad.bank.get("base").calibration is cal
    assert parse_record(record_text(cal), FAKE_SPEC, "x").digest == cal.digest


def test_embed_quantizes_with_each_prefix_calibration_and_names_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    texts = ["a new text to embed", "and another one"]
    with fake_app(folder) as (client, fake, runtime):
        snap = runtime.registry.snapshot
        listed = {p["name"]: p for p in client.get("/prefixes").json()["prefixes"]}
        assert {n: p["calibrated"] for n, p in listed.items()} == {"base": True, "alpha": True, "beta": False}
        assert listed["alpha"]["calibration"]["digest"] == snap.bank.get("alpha").calibration.digest
        assert listed["beta"]["calibration"] is None
        names = ["alpha", "beta", "base"]
        for enc in ("int8", "uint8", "binary", "ubinary"):
            doc = client.post("/embed", json={"inputs": texts, "prefixes": names, "encoding": enc}).json()
            cals = [snap.bank.get(n).calibration for n in names]
            assert [p["calibration"] for p in doc["prefixes"]] == [
                cals[0].digest,
                "uncalibrated",
                cals[2].digest,
            ]
            for i, text in enumerate(texts):
                for name, cal in zip(names, cals, strict=True):
                    unit = l2_normalize(fake.expected(text, snap.bank.get(name)))
                    want = codes(unit, enc, cal)
                    want = pack_bits(want, enc) if enc in ("binary", "ubinary") else want
                    assert doc["data"][i]["embeddings"][name] == want.tolist(), (enc, name)


def test_a_calibration_of_another_pooling_is_not_applied(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with fake_app(folder, pooling="cls") as (client, _, _):
        listed = {p["name"]: p for p in client.get("/prefixes").json()["prefixes"]}
        assert listed["alpha"]["calibrated"] is False
        assert listed["alpha"]["calibration"]["pooling"] == "mean"
        doc = client.post("/embed", json={"inputs": "x y", "prefixes": ["alpha"], "encoding": "int8"}).json()
        assert doc["prefixes"][0]["calibration"] == "uncalibrated"
