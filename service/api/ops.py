"""Operations: ``/health`` (alive), ``/ready`` (warmed up), ``/info``, ``/metrics``. No auth here."""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import __version__
from service.api.deps import MetricsDep, RuntimeDep
from service.api.responses import error_responses

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (the model may still be loading: see ``/ready``)."""
    return {"status": "ok"}


@router.head("/health", response_class=Response)
async def health_head() -> Response:
    """``/health`` for probes that send HEAD: 200, no body."""
    return Response(status_code=200)


@router.get("/ready", responses=error_responses(503))
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 once the model is loaded and warmed up, 503 before (and after a failed start-up)."""
    runtime.serving()  # raises NotReady -> 503 with the reason
    return JSONResponse({"status": "ready"})


@router.head("/ready", response_class=Response, responses=error_responses(503))
async def ready_head(runtime: RuntimeDep) -> Response:
    """``/ready`` for probes that send HEAD: 200 or 503, no body."""
    runtime.serving()
    return Response(status_code=200)


def _versions() -> dict[str, str]:
    import fastapi
    import torch
    import transformers

    return {
        "prefix_embed": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fastapi": fastapi.__version__,
        **_ort_versions(),
    }


def _ort_versions() -> dict[str, str]:
    from service.engine.ort_runtime import installed_ort_distributions

    return dict(d.split("==", 1) for d in installed_ort_distributions())


@router.get("/info")
async def info(runtime: RuntimeDep) -> dict[str, Any]:
    """Model, fingerprint, backend, device, dtype, limits and versions."""
    s = runtime.settings
    enc = runtime.encoder
    snap = runtime.registry.snapshot if runtime.registry else None
    return {
        "model": runtime.model_name,
        "model_path": str(s.model) if s.model is not None else None,
        "ready": runtime.ready,
        "fingerprint": enc.spec.fingerprint if enc else None,
        "backend": enc.backend if enc else s.backend,
        "backend_reason": runtime.backend_reason,  # why this backend (the rule of backend: auto)
        "device": enc.device if enc else s.device,
        "dtype": enc.dtype if enc else s.dtype,
        # ONNX Runtime providers really in use (session.get_providers()); absent for torch
        "providers": enc.providers if enc else None,
        # how batches become model calls (row chunks, grouping by fan-out depth, ONNX exports per depth)
        "engine": enc.describe() if enc else None,
        "dim": enc.dim if enc else None,
        "pooling": s.pooling,
        "prefix_dir": str(s.prefix_dir),
        "prefixes": {
            "loaded": len(snap.bank) if snap else 0,
            "enabled": len(snap.enabled) if snap else 0,
            "rejected": len(snap.rejected) if snap else 0,
            "bank_version": snap.bank.version if snap else None,
        },
        "heads": {  # task heads of POST /predict (GET /heads lists them)
            "loaded": len(snap.heads.heads) if snap else 0,
            "available": sum(h.enabled and h.available for h in snap.heads.heads) if snap else 0,
            "rejected": len(snap.heads.rejected) if snap else 0,
        },
        # the state file (disabled prefixes): where, and why it is not in force (null: it is)
        "state": {
            "file": str(runtime.registry.state.path) if runtime.registry else None,
            "error": snap.state_error if snap else None,
        },
        "limits": {
            "max_client_batch": s.max_client_batch,
            "max_input_tokens": enc.max_input_tokens if enc else s.max_input_tokens,
            "max_input_chars": runtime.batcher.max_input_chars if runtime.batcher else s.max_input_chars,
            "max_batch_tokens": s.max_batch_tokens,
            "max_request_bytes": s.max_request_bytes,
            "max_prefix_file_bytes": s.max_prefix_file_bytes,
            "max_prefix_len": s.max_prefix_len,
            "max_queue_requests": s.max_queue_requests,
            "request_timeout_s": s.request_timeout_s,
            "client_timeout_s": s.client_timeout_s,
            "max_connections": s.max_connections,
            "require_checksum": s.require_checksum,
        },
        "auth": {"api_keys": bool(s.api_keys), "admin_key": s.admin_key is not None},
        # running totals of the batcher (forward calls, rows, tokens, failures, drops by reason)
        "batching": runtime.batcher.stats.snapshot() if runtime.batcher else None,
        "versions": _versions(),
        # Which process answered: the Ray Serve replica id (null for a single `serve` process).
        "replica": {"id": runtime.replica_id, "hostname": socket.gethostname(), "pid": os.getpid()},
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(m: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
