"""Build the configured encoder (torch or ONNX) and the prefix bank from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.config import Settings
from service.engine.backbone import Backbone, load_backbone
from service.engine.encoder import Encoder
from service.engine.torch_encoder import TorchEncoder

if TYPE_CHECKING:
    from service.engine.onnx_encoder import OnnxEncoder


def build_torch_encoder(settings: Settings, backbone: Backbone | None = None) -> TorchEncoder:
    backbone = backbone or load_backbone(settings.model_path(), settings.device, settings.dtype)
    return TorchEncoder(
        backbone,
        pooling=settings.pooling,
        pooling_layers=settings.pooling_layers,
        chunk_rows=settings.forward_chunk_rows,
        max_input_tokens=settings.max_input_tokens,
    )


def build_onnx_encoder(
    settings: Settings, *, force_export: bool = False, threads: int | None = None
) -> OnnxEncoder:
    """Export (or reuse the cached export of) the backbone, then open an ONNX Runtime session on it.

    ``threads``: ORT intra-op threads (None: ORT's default, one per physical core)."""
    from transformers import AutoTokenizer

    from service.engine.backbone import read_spec, trained_max_tokens
    from service.engine.onnx_encoder import OnnxEncoder
    from service.engine.onnx_export import ExportResult, ensure_onnx_export
    from service.engine.ort_runtime import check_ort_install

    check_ort_install()
    path = settings.model_path()
    spec = read_spec(path)

    def exporter(fan_out: int, force: bool = False) -> ExportResult:
        return ensure_onnx_export(
            path,
            settings.onnx_cache_dir,
            pooling=settings.pooling,
            pooling_layers=settings.pooling_layers,
            force=force,
            spec=spec,
            fan_out=fan_out,
        )

    export = exporter(0, force_export)
    return OnnxEncoder(
        export.path,
        export.key,
        spec,
        AutoTokenizer.from_pretrained(path, local_files_only=True),
        default_max_tokens=trained_max_tokens(path, spec),
        device=settings.device,
        dtype=settings.dtype,
        chunk_rows=settings.forward_chunk_rows,
        max_input_tokens=settings.max_input_tokens,
        threads=threads,
        exporter=exporter,  # deeper fan-out depths (shared-trunk prefixes), on first use
    )


def build_encoder(settings: Settings) -> Encoder:
    if settings.backend == "torch":
        return build_torch_encoder(settings)
    if settings.backend == "onnx":
        return build_onnx_encoder(settings)
    raise NotImplementedError(f"backend {settings.backend!r} is not available in this build")
