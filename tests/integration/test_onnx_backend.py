"""The ONNX Runtime backend on tiny random BERT and RoBERTa: parity with torch for prefix counts and
lengths never seen at export, hot-loaded prefixes without re-export, stale cache files re-exported,
the bank bound once per snapshot, chunking, float16, the CLI and the HTTP service on ONNX."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.backend import build_onnx_encoder, build_torch_encoder
from service.cli import app as cli_app
from service.config import Settings
from service.engine import onnx_export
from service.engine.backbone import Backbone, load_backbone
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.onnx_encoder import OnnxEncoder
from service.engine.onnx_io import EXPORT_CASE
from service.engine.prefix import LoadedPrefix, base_prefix
from service.engine.torch_encoder import TorchEncoder
from service.errors import ModelLoadError
from service.registry.limits import PrefixLimits
from service.wire.encodings import l2_normalize
from tests.support.http import wait_ready
from tests.support.prefixes import base_vectors, random_kv

# Exporting the tiny models to ONNX alone takes tens of seconds on a CPU.
pytestmark = pytest.mark.slow

TEXTS = [
    "short",
    "a much longer text that needs quite a few more tokens than the others do",
    "medium length text here",
    "x",
    "another one, with punctuation!",
]
TOL = 1e-4


def make_bank(
    spec_backbone: Backbone, lengths: list[int], start_seed: int = 0, prefix: str = "p"
) -> PrefixBank:
    members = []
    for i, n in enumerate(lengths):
        key, value = random_kv(spec_backbone.spec, n, seed=start_seed + i)
        convention = ("peft", "none")[i % 2]  # both position conventions
        # the digest stands for the content: encoders cache the bank by its members' digests
        digest = f"seed{start_seed + i}-len{n}"
        members.append(LoadedPrefix(f"{prefix}{i}", digest, key, value, convention, "<test>", "native"))
    return PrefixBank.build(members)


def onnx_settings(model: Path, cache: Path, **extra: object) -> Settings:
    return Settings(model=model, backend="onnx", device="cpu", dtype="float32", onnx_cache_dir=cache, **extra)


def same_export(enc: OnnxEncoder, *, chunk_rows: int, parallel_calls: int) -> OnnxEncoder:
    """Another CPU encoder on ``enc``'s depth-0 export, with its own call plan."""
    return OnnxEncoder(
        enc.onnx_path,
        onnx_export.export_key(enc.spec, "mean", 4),
        enc.spec,
        enc.tokenizer,
        default_max_tokens=64,
        device="cpu",
        chunk_rows=chunk_rows,
        parallel_calls=parallel_calls,
    )


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def bert_onnx(tiny_bert_path: Path, onnx_cache: Path) -> OnnxEncoder:
    return build_onnx_encoder(onnx_settings(tiny_bert_path, onnx_cache))


@pytest.fixture(scope="module")
def bert_torch(tiny_bert: Backbone) -> TorchEncoder:
    return TorchEncoder(tiny_bert, chunk_rows=0)


@pytest.fixture(scope="module")
def roberta(tiny_roberta_path: Path) -> Backbone:
    return load_backbone(tiny_roberta_path, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def roberta_onnx(tiny_roberta_path: Path, onnx_cache: Path) -> OnnxEncoder:
    return build_onnx_encoder(onnx_settings(tiny_roberta_path, onnx_cache, pooling="multilayer"))


def test_graph_has_dynamic_rows_seq_prefixes_and_prefix_len(bert_onnx: OnnxEncoder) -> None:
    shapes = {i.name: i.shape for i in bert_onnx.session.get_inputs()}
    spec = bert_onnx.spec
    assert all(isinstance(d, str) for d in shapes["input_ids"])
    assert isinstance(shapes["prefix_index"][0], str)
    p, layers, heads, lp, hd = shapes["prefix_keys"]
    assert isinstance(p, str)
    assert isinstance(lp, str)
    assert (layers, heads, hd) == (spec.num_layers, spec.num_heads, spec.head_dim)
    assert bert_onnx.providers == ["CPUExecutionProvider"]
    assert bert_onnx.device == "cpu"
    assert bert_onnx.export_info["fingerprint"] == spec.fingerprint
    assert float(bert_onnx.export_info["validated_max_abs_diff"]) <= TOL


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_matches_torch_for_prefix_counts_and_lengths_not_seen_at_export(
    family: str,
    request: pytest.FixtureRequest,
    tiny_bert: Backbone,
    roberta: Backbone,
) -> None:
    backbone = tiny_bert if family == "bert" else roberta
    ort_enc: OnnxEncoder = request.getfixturevalue(f"{family}_onnx")
    torch_enc = TorchEncoder(backbone, pooling="mean" if family == "bert" else "multilayer", chunk_rows=0)
    lengths = [12, 3, 7, 1, 9]  # P=5, Lp=12, mixed: the export saw P=2, Lp=4
    assert len(lengths) > len(EXPORT_CASE[2])
    assert max(lengths) > EXPORT_CASE[3]
    bank = make_bank(backbone, lengths)
    batch = torch_enc.tokenize(TEXTS, max_length=40, truncate=True)
    for slots in ([0, 1, 2, 3, 4], [4, 1], [3]):
        want = torch_enc.encode(batch, bank, slots)
        got = ort_enc.encode(batch, bank, slots)
        assert got.shape == (len(TEXTS), len(slots), backbone.spec.hidden_size)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    np.testing.assert_allclose(base_vectors(ort_enc, batch), base_vectors(torch_enc, batch), atol=TOL, rtol=0)


def test_plain_is_not_a_prefixed_output(
    bert_onnx: OnnxEncoder, bert_torch: TorchEncoder, tiny_bert: Backbone
) -> None:
    """The zero-length slot really masks: the plain vectors differ from any prefixed ones."""
    batch = bert_torch.tokenize(TEXTS, max_length=40, truncate=True)
    plain = base_vectors(bert_onnx, batch)
    prefixed = bert_onnx.encode(batch, make_bank(tiny_bert, [5]), [0])[:, 0]
    assert np.abs(plain - prefixed).max() > 1e-2


def test_prefix_added_after_export_is_served_without_reexport(
    bert_onnx: OnnxEncoder,
    bert_torch: TorchEncoder,
    tiny_bert: Backbone,
    tiny_bert_path: Path,
    onnx_cache: Path,
    count_exports: list[Path],
) -> None:
    batch = bert_torch.tokenize(TEXTS, max_length=40, truncate=True)
    before = make_bank(tiny_bert, [4, 2])
    bert_onnx.encode(batch, before, [0, 1])
    # hot-load: a new snapshot with a third, longer prefix (a new name, never seen by the graph)
    late_key, late_value = random_kv(tiny_bert.spec, 10, seed=99)
    late = LoadedPrefix("late", "dlate", late_key, late_value, "peft", "<test>", "native")
    after = PrefixBank.build([*before.prefixes, late])
    slots = after.indices(["late", "p0"])
    np.testing.assert_allclose(
        bert_onnx.encode(batch, after, slots), bert_torch.encode(batch, after, slots), atol=TOL, rtol=0
    )
    # a second service start on the same cache reuses the file too
    again = build_onnx_encoder(onnx_settings(tiny_bert_path, onnx_cache))
    np.testing.assert_allclose(
        again.encode(batch, after, slots), bert_torch.encode(batch, after, slots), atol=TOL, rtol=0
    )
    assert count_exports == []


def test_bank_is_bound_once_per_snapshot(
    bert_onnx: OnnxEncoder, bert_torch: TorchEncoder, tiny_bert: Backbone
) -> None:
    batch = bert_torch.tokenize(TEXTS[:2], max_length=40, truncate=True)
    one, two = make_bank(tiny_bert, [3, 5], start_seed=10), make_bank(tiny_bert, [3, 5, 2], start_seed=10)
    before = bert_onnx.bank_uploads
    for bank in (one, one, one, two, two):
        bert_onnx.encode(batch, bank, [0, 1])
    bank_inputs = ["prefix_keys", "prefix_values", "prefix_lengths", "prefix_shift", "prefix_first"]
    assert bert_onnx.bank_uploads - before == 2
    assert sorted(bert_onnx.bound_bank) == sorted(bank_inputs)
    assert bert_onnx.bound_bank["prefix_keys"].shape()[0] == len(two)  # the last snapshot's


def test_chunked_calls_equal_one_call(bert_onnx: OnnxEncoder, tiny_bert: Backbone) -> None:
    bank = make_bank(tiny_bert, [6, 2, 4])
    batch = bert_onnx.tokenize(TEXTS, max_length=40, truncate=True)
    whole = bert_onnx.encode(batch, bank, [0, 1, 2])
    chunked = same_export(bert_onnx, chunk_rows=6, parallel_calls=1)  # 2 texts (x 3 prefixes) per call
    seen: list[int] = []
    chunked.set_observer(lambda call: seen.append(call.rows))
    np.testing.assert_allclose(chunked.encode(batch, bank, [0, 1, 2]), whole, atol=1e-6, rtol=0)
    assert seen == [6, 6, 3]
    assert chunked.forward_calls == 3


def test_stale_or_mismatched_file_is_reexported(
    tmp_path: Path,
    tiny_bert_path: Path,
    bert_onnx: OnnxEncoder,
    roberta_onnx: OnnxEncoder,
    bert_torch: TorchEncoder,
    tiny_bert: Backbone,
    count_exports: list[Path],
) -> None:
    # another backbone's export sits where this backbone's export belongs
    target = tmp_path / bert_onnx.onnx_path.name
    shutil.copy(roberta_onnx.onnx_path, target)
    enc = build_onnx_encoder(onnx_settings(tiny_bert_path, tmp_path))
    assert count_exports == [target]
    meta = {p.key: p.value for p in onnx.load(str(target), load_external_data=False).metadata_props}
    assert meta["prefix_embed.fingerprint"] == tiny_bert.spec.fingerprint
    bank = make_bank(tiny_bert, [5, 1])
    batch = enc.tokenize(TEXTS, max_length=40, truncate=True)
    np.testing.assert_allclose(
        enc.encode(batch, bank, [0, 1]), bert_torch.encode(batch, bank, [0, 1]), atol=TOL
    )
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file of the atomic write was left behind"


def test_stale_detection_rules(tmp_path: Path, bert_onnx: OnnxEncoder, tiny_bert: Backbone) -> None:
    key = onnx_export.export_key(tiny_bert.spec, "mean", 4)
    meta = onnx_export.read_export_metadata(bert_onnx.onnx_path)
    assert meta is not None
    assert key.mismatches(meta) == []
    older = {**meta, "prefix_embed.exporter": "torch-2.12.0-dynamo/onnxscript-0.6.0/transformers-5.0.0"}
    assert key.mismatches(older) == ["prefix_embed.exporter"]
    assert onnx_export.export_key(tiny_bert.spec, "cls", 4).mismatches(meta) == ["prefix_embed.pooling"]
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(bert_onnx.onnx_path.read_bytes()[:5000])
    assert onnx_export.read_export_metadata(truncated) is None
    assert onnx_export.read_export_metadata(tmp_path / "missing.onnx") is None


def test_export_that_differs_from_torch_is_not_cached(
    tmp_path: Path, tiny_bert_path: Path, roberta_onnx: OnnxEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on-the-spot validation is real: a graph that computes something else (here: the RoBERTa
    graph standing in for BERT's export) fails it, and nothing is written to the cache."""
    wrong = onnx.load(str(roberta_onnx.onnx_path))
    monkeypatch.setattr(onnx_export, "trace_forward", lambda forward: wrong)
    with pytest.raises(onnx_export.OnnxExportError, match="differs from torch by"):
        build_onnx_encoder(onnx_settings(tiny_bert_path, tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_session_refuses_a_file_swapped_after_the_cache_check(
    bert_onnx: OnnxEncoder, roberta_onnx: OnnxEncoder, tiny_bert: Backbone
) -> None:
    with pytest.raises(ModelLoadError, match="does not match the expected export"):
        OnnxEncoder(
            roberta_onnx.onnx_path,
            onnx_export.export_key(tiny_bert.spec, "mean", 4),
            tiny_bert.spec,
            bert_onnx.tokenizer,
            default_max_tokens=64,
            device="cpu",
        )


def test_float16_graph_is_checked_against_float32(bert_onnx: OnnxEncoder, tiny_bert: Backbone) -> None:
    """On CUDA the encoder serves this float16 graph; the conversion and its parity check run on CPU too."""
    from service.engine.ort_fp16 import FP16_REL_TOL, fp16_session, relative_diff
    from service.engine.ort_runtime import session_options

    fp16 = fp16_session(bert_onnx.onnx_path, bert_onnx.session, session_options(), tiny_bert.spec, 1000)
    assert fp16 is not None
    types = {i.name: i.type for i in fp16.get_inputs()}
    assert types["prefix_keys"] == "tensor(float)"  # the bank stays float32 at the graph boundary
    diff = relative_diff(fp16, bert_onnx.session, tiny_bert.spec, 1000)
    assert 0 < diff <= FP16_REL_TOL  # it really is a different (half precision) graph, and close
    with pytest.raises(
        ModelLoadError, match=r"float16 is not supported .* on cpu \(choose auto \| float32 \| int8\)"
    ):
        OnnxEncoder(
            bert_onnx.onnx_path,
            onnx_export.export_key(tiny_bert.spec, "mean", 4),
            tiny_bert.spec,
            bert_onnx.tokenizer,
            default_max_tokens=64,
            device="cpu",
            dtype="float16",
        )


def test_cli_export_onnx_reuses_the_cached_file(
    tiny_bert_path: Path, onnx_cache: Path, bert_onnx: OnnxEncoder
) -> None:
    result = CliRunner().invoke(
        cli_app, ["export-onnx", "--model", str(tiny_bert_path), "--onnx-cache-dir", str(onnx_cache)]
    )
    assert result.exit_code == 0, result.output
    assert f"reused {bert_onnx.onnx_path}" in result.output


@pytest.fixture(scope="module")
def onnx_client(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert_path: Path,
    tiny_bert: Backbone,
    bert_onnx: OnnxEncoder,
) -> Iterator[tuple[TestClient, Path, Settings]]:
    from service.registry.writer import native_bytes

    folder = tmp_path_factory.mktemp("onnx-prefixes")
    for i, n in enumerate((3, 8)):
        key, value = random_kv(tiny_bert.spec, n, seed=40 + i)
        meta = {"backbone_fingerprint": tiny_bert.spec.fingerprint, "position_convention": "peft"}
        (folder / f"q{i}.safetensors").write_bytes(native_bytes(key, value, meta))
    settings = onnx_settings(
        tiny_bert_path, bert_onnx.onnx_path.parent, prefix_dir=folder, watch=False, default_prefixes="enabled"
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client, folder, settings


def test_service_on_onnx_serves_torch_vectors(
    onnx_client: tuple[TestClient, Path, Settings], tiny_bert: Backbone, write_prefix: Callable[..., Path]
) -> None:
    client, folder, settings = onnx_client
    info = client.get("/info").json()
    assert info["backend"] == "onnx"
    assert info["device"] == "cpu"
    assert info["providers"] == ["CPUExecutionProvider"]
    assert any(name.startswith("onnxruntime") for name in info["versions"])
    doc = client.post("/embed", json={"inputs": TEXTS[:3]}).json()
    assert [p["name"] for p in doc["prefixes"]] == ["base", "q0", "q1"]
    reference = build_torch_encoder(settings.model_copy(update={"backend": "torch"}), backbone=tiny_bert)
    from service.registry.folder import scan_folder

    loaded, _ = scan_folder(folder, tiny_bert.spec, PrefixLimits(max_prefix_len=256, max_file_bytes=1 << 24))
    bank = PrefixBank.build(loaded, base=base_prefix(tiny_bert.spec))
    want, _ = embed_sync(reference, bank, ["base", "q0", "q1"], TEXTS[:3])
    want = l2_normalize(want)
    for i, item in enumerate(doc["data"]):
        got = np.array([item["embeddings"][n] for n in ("base", "q0", "q1")])
        np.testing.assert_allclose(got, want[i], atol=TOL)


def test_auto_device_reports_the_provider_really_in_use(
    tiny_bert_path: Path,
    onnx_cache: Path,
    bert_onnx: OnnxEncoder,
    bert_torch: TorchEncoder,
    tiny_bert: Backbone,
) -> None:
    """With onnxruntime-gpu on a machine without CUDA, ``auto`` asks for CUDA and ORT falls back: the
    encoder reports the session's providers, not the available ones."""
    settings = Settings(model=tiny_bert_path, backend="onnx", onnx_cache_dir=onnx_cache)  # auto, auto
    enc = build_onnx_encoder(settings)
    assert enc.providers == enc.session.get_providers()
    on_cuda = enc.providers[0] == "CUDAExecutionProvider"
    assert enc.device == ("cuda:0" if on_cuda else "cpu")
    assert enc.dtype == ("float16" if on_cuda else "float32")
    bank = make_bank(tiny_bert, [7, 2])
    batch = enc.tokenize(TEXTS, max_length=40, truncate=True)
    want = bert_torch.encode(batch, bank, [0, 1])
    np.testing.assert_allclose(enc.encode(batch, bank, [0, 1]), want, atol=2e-2 if on_cuda else TOL)


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "atol"), [("float32", 1e-3), ("float16", 2e-2)])
def test_cuda_provider_keeps_the_bank_on_the_device(
    dtype: str,
    atol: float,
    tiny_bert_path: Path,
    onnx_cache: Path,
    bert_torch: TorchEncoder,
    tiny_bert: Backbone,
) -> None:
    """Needs onnxruntime-gpu (the gpu extra) with CUDA 13 / cuDNN 9. fp32 tolerance is looser than on
    CPU: CUDA kernels (TF32 matmuls by default on Ampere and later) round differently from torch on CPU."""
    enc = build_onnx_encoder(
        Settings(model=tiny_bert_path, backend="onnx", device="cuda", dtype=dtype, onnx_cache_dir=onnx_cache)
    )
    assert enc.providers[0] == "CUDAExecutionProvider"
    assert enc.device == "cuda:0"
    assert enc.dtype == dtype
    bank = make_bank(tiny_bert, [12, 3, 7, 1, 9])
    batch = enc.tokenize(TEXTS, max_length=40, truncate=True)
    got = enc.encode(batch, bank, [0, 1, 2, 3, 4])
    assert all(v.device_name().lower() == "cuda" for v in enc.bound_bank.values())
    np.testing.assert_allclose(got, bert_torch.encode(batch, bank, [0, 1, 2, 3, 4]), atol=atol)
    np.testing.assert_allclose(base_vectors(enc, batch), base_vectors(bert_torch, batch), atol=atol)


def test_parallel_calls_equal_one_call_and_each_call_is_observed_once(
    bert_onnx: OnnxEncoder, tiny_bert: Backbone
) -> None:
    import threading

    bank = make_bank(tiny_bert, [6, 2, 4])
    batch = bert_onnx.tokenize(TEXTS * 3, max_length=40, truncate=True)

    # chunk_rows 3: 1 text (x 3 prefixes) per model call
    one, two = (same_export(bert_onnx, chunk_rows=3, parallel_calls=n) for n in (1, 2))
    assert (one.parallel_calls, two.parallel_calls) == (1, 2)
    assert two.intra_op_threads is not None  # the CPUs shared among the side-by-side calls
    seen: list[tuple[int, str]] = []
    two.set_observer(lambda call: seen.append((call.rows, threading.current_thread().name)))
    # what the batcher hands over: parallel_calls model calls' worth of texts per encode
    assert two.texts_per_call(batch.size, bank, [0, 1, 2]) == 2 * one.texts_per_call(
        batch.size, bank, [0, 1, 2]
    )
    np.testing.assert_allclose(
        two.encode(batch, bank, [0, 1, 2]), one.encode(batch, bank, [0, 1, 2]), atol=1e-6, rtol=0
    )
    assert [rows for rows, _ in seen] == [3] * batch.size
    assert two.forward_calls == batch.size
    assert {name.split("_")[0] for _, name in seen} == {"prefix-embed-call"}  # ran on the call pool
    np.testing.assert_allclose(base_vectors(two, batch), base_vectors(one, batch), atol=1e-6, rtol=0)
