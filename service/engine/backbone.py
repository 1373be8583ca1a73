"""Load a frozen encoder from a local folder and describe it (``BackboneSpec``)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

if TYPE_CHECKING:  # the modeling stack is imported where a model is loaded (see load_backbone)
    from transformers import PreTrainedModel

from service.engine.arch import Architecture, architecture_for
from service.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """What a prefix must match, and what the engine needs to build rows."""

    model_type: str
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    max_positions: int
    position_offset: int  # first text position id (RoBERTa: padding_idx + 1)
    pad_token_id: int
    weights_digest: str

    @property
    def fingerprint(self) -> str:
        """Short stable id of architecture, sizes and weights (recorded in prefix metadata)."""
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return (
            f"{self.model_type}-L{self.num_layers}-H{self.hidden_size}-"
            + hashlib.sha256(payload).hexdigest()[:16]
        )

    @property
    def max_text_positions(self) -> int:
        """Positions usable by text when no prefix shifts them."""
        return self.max_positions - self.position_offset


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: BackboneSpec
    path: Path
    default_max_tokens: int  # the model's trained sequence length (sentence-transformers config)

    @property
    def arch(self) -> Architecture:
        """How the engine runs this model's layers with prefixes (chosen by ``spec.model_type``)."""
        return architecture_for(self.spec.model_type)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files of a model folder (names and bytes), safetensors preferred."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ModelLoadError(f"no weight files (*.safetensors) in model folder {folder}")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def spec_from_config(config: object, digest: str) -> BackboneSpec:
    model_type = str(getattr(config, "model_type", ""))
    try:
        arch = architecture_for(model_type)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    hidden = int(config.hidden_size)  # type: ignore[attr-defined]
    heads = int(config.num_attention_heads)  # type: ignore[attr-defined]
    pad = int(getattr(config, "pad_token_id", 0) or 0)
    return BackboneSpec(
        model_type=model_type,
        num_layers=int(config.num_hidden_layers),  # type: ignore[attr-defined]
        num_heads=heads,
        head_dim=hidden // heads,
        hidden_size=hidden,
        max_positions=int(config.max_position_embeddings),  # type: ignore[attr-defined]
        position_offset=arch.position_offset(model_type, pad),
        pad_token_id=pad,
        weights_digest=digest,
    )


def trained_max_tokens(folder: Path, spec: BackboneSpec) -> int:
    """The sequence length the model was trained with (sentence-transformers config), else the maximum."""
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        try:
            return min(int(json.loads(st.read_text())["max_seq_length"]), spec.max_text_positions)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable %s", st)
    return spec.max_text_positions


def read_spec(path: Path) -> BackboneSpec:
    """The spec (fingerprint included) of a model folder, without building the model."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder {path} has no config.json")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    return spec_from_config(config, weights_digest(path))


def load_backbone(path: Path, device: str = "auto", dtype: str = "auto") -> Backbone:
    """Load weights and tokenizer from a local folder, offline; the model is frozen (eval, no grad)."""
    path = Path(path)
    spec = read_spec(path)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # The load report lists the checkpoint's pooler weights, which we drop on purpose (no pooling layer).
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=dt, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    model.to(dev).eval()
    model.requires_grad_(False)
    architecture_for(spec.model_type).install(model)
    log.info("loaded %s (%s) on %s as %s", path, spec.fingerprint, dev, dt)
    return Backbone(model, tokenizer, spec, path, trained_max_tokens(path, spec))
