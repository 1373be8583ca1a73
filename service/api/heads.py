"""``/heads``: list the task heads (with availability), enable/disable them (JSON merge patch), upload
and delete head files. Changes are written to the prefix folder atomically (``heads/``, the state
file), so they survive restarts and reach every replica sharing the folder through its watcher."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from service.api.auth import require_admin, require_api_key
from service.api.deps import ServingDep
from service.api.prefixes import PatchBody, iso_time
from service.api.responses import ADMIN_ERRORS, READ_ERRORS, upload_body
from service.heads.table import HeadTable, ServedHead
from service.registry.registry import Snapshot

router = APIRouter(prefix="/heads", tags=["heads"])


def head_doc(served: ServedHead) -> dict[str, Any]:
    h = served.head
    return {
        "name": h.name,
        "enabled": served.enabled,
        # every input prefix loaded, enabled and with the digest the head was fitted on
        "available": served.available,
        "reason": served.reason,
        "digest": h.digest,
        "task": h.task,
        "labels": list(h.labels),
        "inputs": [{"name": i.name, "digest": i.digest} for i in h.inputs],
        "normalize": h.normalize,
        "activation": h.activation,
        "dim_in": h.dim_in,
        "source": h.source,
        "loaded_at": iso_time(h.loaded_at),
        "stale": served.stale,  # its file is rejected now; this previous good version serves
        "metadata": h.metadata,
    }


def heads_listing(snap: Snapshot) -> dict[str, Any]:
    table: HeadTable = snap.heads
    return {
        "heads": [head_doc(s) for s in table.heads],
        "rejected": [{"source": r.source, "reason": r.reason} for r in table.rejected],
        "version": snap.version,
        "updated_at": iso_time(snap.loaded_at),
    }


@router.get("", dependencies=[Depends(require_api_key)], responses=READ_ERRORS)
async def list_heads(serving: ServingDep) -> dict[str, Any]:
    """Every loaded head with its availability (and the reason when unavailable), and every rejected
    head file with its reason."""
    return heads_listing(serving.registry.snapshot)


@router.patch("", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def patch_heads(patch: PatchBody, serving: ServingDep) -> dict[str, Any]:
    """Enable or disable heads: all of the patch or none of it; unknown names -> 404."""
    return heads_listing(await asyncio.to_thread(serving.registry.apply_head_patch, patch))


@router.patch("/{name}", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def patch_head(name: str, patch: PatchBody, serving: ServingDep) -> dict[str, Any]:
    """``{"enabled": false}`` for one head."""
    snap = await asyncio.to_thread(serving.registry.apply_head_patch, {name: patch})
    return head_doc(snap.heads.get(name))


@router.put(
    "/{name}",
    dependencies=[Depends(require_admin)],
    status_code=201,
    responses={200: {"description": "Replaced an existing head file"}, **ADMIN_ERRORS},
    openapi_extra=upload_body(
        "A head file (safetensors: weight, bias, optional mean/scale; see prefixes/README.md)"
    ),
)
async def put_head(name: str, request: Request, serving: ServingDep) -> JSONResponse:
    """Upload a head file (the request body): validated, written atomically, hot-loaded. 201 when the
    head is new, 200 when it replaced a file. Its enabled state is kept."""
    data = await request.body()
    _, created = await asyncio.to_thread(serving.registry.put_head, name, data)
    return JSONResponse(
        head_doc(serving.registry.snapshot.heads.get(name)), status_code=201 if created else 200
    )


@router.delete("/{name}", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def delete_head(name: str, serving: ServingDep) -> dict[str, Any]:
    """Remove ``heads/NAME.safetensors`` from the folder (an atomic unlink); unknown -> 404."""
    snap = await asyncio.to_thread(serving.registry.delete_head, name)
    return {"deleted": name} | heads_listing(snap)
