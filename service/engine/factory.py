"""Build the configured encoder (torch or ONNX) and the prefix bank from settings."""

from __future__ import annotations

from service.config import Settings
from service.engine.backbone import Backbone, load_backbone
from service.engine.encoder import Encoder
from service.engine.torch_encoder import TorchEncoder


def build_torch_encoder(settings: Settings, backbone: Backbone | None = None) -> TorchEncoder:
    backbone = backbone or load_backbone(settings.model_path(), settings.device, settings.dtype)
    return TorchEncoder(
        backbone,
        pooling=settings.pooling,
        pooling_layers=settings.pooling_layers,
        chunk_rows=settings.forward_chunk_rows,
        max_input_tokens=settings.max_input_tokens,
    )


def build_encoder(settings: Settings) -> Encoder:
    if settings.backend == "torch":
        return build_torch_encoder(settings)
    raise NotImplementedError(f"backend {settings.backend!r} is not available in this build")
