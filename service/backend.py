"""Build the configured encoder (torch or ONNX) from settings, choosing the backend for ``auto``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from service.config import Settings
from service.engine.backbone import Backbone, load_backbone
from service.engine.encoder import Encoder
from service.engine.torch_encoder import TorchEncoder

if TYPE_CHECKING:
    from service.engine.onnx_encoder import OnnxEncoder
    from service.engine.onnx_export import ExportResult

log = logging.getLogger(__name__)


def build_torch_encoder(settings: Settings, backbone: Backbone | None = None) -> TorchEncoder:
    backbone = backbone or load_backbone(settings.model_path(), settings.device, settings.dtype)
    return TorchEncoder(
        backbone,
        pooling=settings.pooling,
        pooling_layers=settings.pooling_layers,
        chunk_rows=settings.forward_chunk_rows,
        max_input_tokens=settings.max_input_tokens,
    )


def onnx_exporter(settings: Settings) -> Callable[..., ExportResult]:
    """``exporter(fan_out, force)``: the cached ONNX file of a fan-out depth for ``settings`` (model,
    pooling, cache folder), exported when missing or stale; for dtype int8, the int8 file made from
    the float32 one. What ``serve`` opens and ``export-onnx`` prepares."""
    from transformers import AutoTokenizer

    from service.engine.backbone import read_spec
    from service.engine.onnx_export import ensure_onnx_export
    from service.engine.onnx_int8 import ensure_int8_export

    path = settings.model_path()
    spec = read_spec(path)
    vocab = len(AutoTokenizer.from_pretrained(path, local_files_only=True))

    def exporter(fan_out: int, force: bool = False) -> ExportResult:
        fp32 = ensure_onnx_export(
            path,
            settings.onnx_cache_dir,
            pooling=settings.pooling,
            pooling_layers=settings.pooling_layers,
            force=force,
            spec=spec,
            fan_out=fan_out,
        )
        if settings.dtype != "int8":
            return fp32
        return ensure_int8_export(fp32, spec, vocab, force=force)

    return exporter


def build_onnx_encoder(
    settings: Settings, *, force_export: bool = False, threads: int | None = None
) -> OnnxEncoder:
    """Export (or reuse the cached export of) the backbone, then open an ONNX Runtime session on it.

    ``threads``: ORT intra-op threads (None: ``settings.onnx_threads``)."""
    from transformers import AutoTokenizer

    from service.engine.backbone import read_spec, trained_max_tokens
    from service.engine.onnx_encoder import OnnxEncoder
    from service.engine.ort_runtime import check_ort_install

    check_ort_install()
    path = settings.model_path()
    spec = read_spec(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    exporter = onnx_exporter(settings)
    export = exporter(0, force_export)
    return OnnxEncoder(
        export.path,
        export.key,
        spec,
        tokenizer,
        default_max_tokens=trained_max_tokens(path, spec),
        device=settings.device,
        dtype=settings.dtype,
        chunk_rows=settings.forward_chunk_rows,
        max_input_tokens=settings.max_input_tokens,
        threads=threads or settings.onnx_threads,
        spinning=settings.onnx_spinning,
        parallel_calls=settings.onnx_parallel_calls,
        exporter=exporter,  # deeper fan-out depths (shared-trunk prefixes), on first use
    )


# Where the speed of onnx against torch is measured: the one source of the numbers behind ``auto``.
# The start-up log (the reason below) and the README cite it instead of repeating numbers.
ONNX_SPEED_SOURCE = 'BENCHMARKS.md, "Backend rule"'


@dataclass(frozen=True)
class BackendChoice:
    """The backend that serves, and why (reported by ``GET /info``)."""

    backend: Literal["torch", "onnx"]
    reason: str


def choose_backend(requested: str, device: str, dtype: str, *, ort_installed: bool) -> BackendChoice:
    """The rule behind ``backend: auto``, per device (the measurements are in BENCHMARKS.md):

    - CPU, float32: **onnx** (when ONNX Runtime is installed): faster than torch at every load shape
      measured (the numbers: :data:`ONNX_SPEED_SOURCE`, never copied here or into the README);
    - CUDA: **torch** (fp16/bf16 kernels, the same calls as the rest of the engine; ONNX on GPU was
      not measured faster);
    - CPU with a reduced dtype, or no ONNX Runtime: torch.
    An explicit ``torch``/``onnx`` always wins.
    """
    if requested in ("torch", "onnx"):
        return BackendChoice(requested, f"backend {requested} was set explicitly")  # type: ignore[arg-type]
    if dtype == "int8":
        return BackendChoice("onnx", "auto: onnx for dtype int8 (ONNX Runtime's int8 MatMuls)")
    if device.startswith("cuda"):
        return BackendChoice("torch", "auto: torch on CUDA")
    if dtype not in ("auto", "float32"):
        return BackendChoice(
            "torch", f"auto: torch for dtype {dtype} on CPU (onnx runs float32 and int8 there)"
        )
    if not ort_installed:
        return BackendChoice("torch", "auto: ONNX Runtime is not installed (extra `cpu`), so torch")
    return BackendChoice("onnx", f"auto: onnx on CPU (faster than torch: {ONNX_SPEED_SOURCE})")


def resolved_device(device: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_encoder_for(settings: Settings) -> tuple[Encoder, BackendChoice]:
    """The encoder ``settings`` ask for, and the backend choice. Under ``auto`` an ONNX export or
    session that fails falls back to torch (logged, and said in the reason)."""
    from service.engine.ort_runtime import installed_ort_distributions

    choice = choose_backend(
        settings.backend,
        resolved_device(settings.device),
        settings.dtype,
        ort_installed=bool(installed_ort_distributions()),
    )
    if choice.backend == "torch":
        return build_torch_encoder(settings), choice
    try:
        return build_onnx_encoder(settings), choice
    except Exception as exc:
        if settings.backend != "auto" or settings.dtype == "int8":  # torch has no int8 backbone
            raise
        log.warning("backend auto: the onnx backend failed to start (%s); serving with torch", exc)
        reason = f"auto: onnx failed to start ({type(exc).__name__}), so torch"
        return build_torch_encoder(settings), BackendChoice("torch", reason)


def build_encoder(settings: Settings) -> Encoder:
    return build_encoder_for(settings)[0]
