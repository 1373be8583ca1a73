"""``/prefixes``: list the prefix folder, enable/disable prefixes (JSON merge patch), upload or delete
a prefix.

Changes are written to the folder (state file, prefix files) atomically, so they survive restarts
and reach every replica sharing the folder through its watcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse

from service.api.auth import require_admin, require_api_key
from service.api.deps import ServingDep
from service.api.responses import ADMIN_ERRORS, READ_ERRORS, error_responses, upload_body
from service.engine.calibration import applicable
from service.engine.prefix import BASE_NAME, LoadedPrefix
from service.errors import InvalidInput
from service.registry.native import is_verified
from service.registry.registry import Snapshot
from service.registry.similarity import similarity_document

router = APIRouter(prefix="/prefixes", tags=["prefixes"])

PatchBody = Annotated[Any, Body(description='JSON merge patch, e.g. {"sentiment": {"enabled": false}}')]


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prefix_doc(prefix: LoadedPrefix, snap: Snapshot, pooling: str) -> dict[str, Any]:
    """One prefix as listed; ``pooling``: the server's pooling id (a calibration applies only to it)."""
    return {
        "name": prefix.name,
        "enabled": prefix.name in snap.enabled,
        "digest": prefix.digest,
        "prefix_len": prefix.prefix_len,
        "first_layer": prefix.first_layer,  # acts in layers first_layer..L-1 (0: every layer)
        "position_convention": prefix.position_convention,
        "kind": prefix.kind,
        "source": prefix.source,
        "loaded_at": iso_time(prefix.loaded_at),
        # True while the file is rejected and the previous good version keeps serving.
        "stale": prefix.name in snap.stale,
        # False: no content_sha256 proved it whole (a PEFT folder; a native file with require_checksum off)
        "verified": prefix.builtin or is_verified(prefix),
        "disabled_reason": snap.disabled_reason(prefix.name),
        # the quantized encodings use its calibration (else the "uncalibrated" fallback)
        "calibrated": applicable(prefix, pooling) is not None,
        "calibration": prefix.calibration.summary() if prefix.calibration is not None else None,
        "metadata": prefix.metadata,
    }


BUILT_IN = f"{BASE_NAME} is built in: it is the backbone's own vector, with no file"


def without_base(patch: object) -> object:
    """The patch minus a no-op entry for ``base``; disabling (or changing) ``base`` is a 400."""
    if not isinstance(patch, Mapping) or BASE_NAME not in patch:
        return patch  # the registry reports any other malformed patch
    body = patch[BASE_NAME]
    if isinstance(body, Mapping) and set(body) <= {"enabled"} and body.get("enabled", True) in (True, None):
        return {k: v for k, v in patch.items() if k != BASE_NAME}
    raise InvalidInput(f"{BUILT_IN} and cannot be disabled (choose prefixes per request instead)")


def listing(snap: Snapshot, pooling: str) -> dict[str, Any]:
    return {
        "prefixes": [prefix_doc(p, snap, pooling) for p in snap.bank.prefixes],
        "rejected": [{"source": r.source, "reason": r.reason} for r in snap.rejected],
        # names the state file disables that have no file now: they come back disabled if it returns
        "disabled_without_file": sorted(snap.disabled - set(snap.bank.names)),
        "bank_version": snap.bank.version,
        "version": snap.version,
        "updated_at": iso_time(snap.loaded_at),
    }


@router.get("", dependencies=[Depends(require_api_key)], responses=READ_ERRORS)
async def list_prefixes(serving: ServingDep) -> dict[str, Any]:
    """Every served prefix, and every rejected folder entry with its reason."""
    return listing(serving.registry.snapshot, serving.pipeline.pooling)


@router.get(
    "/similarity", dependencies=[Depends(require_api_key)], responses=error_responses(400, 401, 404, 422, 503)
)
async def prefix_similarity(
    serving: ServingDep,
    target: Annotated[str | None, Query(description="Rank the other prefixes for this one.")] = None,
    measure: Annotated[Literal["mean", "flat"], Query(description="Task-embedding measure.")] = "mean",
) -> dict[str, Any]:
    """Task embeddings (service/registry/similarity.py): the pairwise similarity of every loaded prefix,
    or, with ``target``, the other prefixes ranked by similarity to it. Unknown target -> 404."""
    snap = serving.registry.snapshot
    if target is not None:
        snap.bank.indices([target])  # PrefixNotFound (404) naming the known prefixes
    if target == BASE_NAME:
        raise InvalidInput(f"{BUILT_IN}, so it has no task embedding to compare")
    files = tuple(p for p in snap.bank.prefixes if not p.builtin)  # base has no key/value vectors
    doc = await asyncio.to_thread(similarity_document, files, target, measure)
    for item in doc["prefixes"]:
        item["enabled"] = item["name"] in snap.enabled
    return doc | {"bank_version": snap.bank.version}


@router.patch("", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def patch_prefixes(patch: PatchBody, serving: ServingDep) -> dict[str, Any]:
    """Enable or disable prefixes: all of the patch or none of it; unknown names -> 404."""
    snap = await asyncio.to_thread(serving.registry.apply_patch, without_base(patch))
    return listing(snap, serving.pipeline.pooling)


@router.patch("/{name}", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def patch_prefix(name: str, patch: PatchBody, serving: ServingDep) -> dict[str, Any]:
    """``{"enabled": false}`` for one prefix."""
    snap = await asyncio.to_thread(serving.registry.apply_patch, without_base({name: patch}))
    return prefix_doc(snap.bank.get(name), snap, serving.pipeline.pooling)


@router.put(
    "/{name}",
    dependencies=[Depends(require_admin)],
    status_code=201,
    responses={200: {"description": "Replaced an existing prefix file"}, **ADMIN_ERRORS},
    openapi_extra=upload_body(
        "A native prefix file (safetensors with tensors `key` and `value`); see prefixes/README.md"
    ),
)
async def put_prefix(name: str, request: Request, serving: ServingDep) -> JSONResponse:
    """Upload a native prefix file (the request body): validated, written atomically, hot-loaded.

    201 when the prefix is new, 200 when it replaced an existing file. Its enabled state is kept.
    """
    if name == BASE_NAME:
        raise InvalidInput(f"{BUILT_IN}; no prefix file may be named {BASE_NAME!r}")
    data = await request.body()
    result = await asyncio.to_thread(serving.registry.put_prefix, name, data)
    snap = serving.registry.snapshot
    return JSONResponse(
        prefix_doc(result.prefix, snap, serving.pipeline.pooling), status_code=201 if result.created else 200
    )


@router.delete("/{name}", dependencies=[Depends(require_admin)], responses=ADMIN_ERRORS)
async def delete_prefix(name: str, serving: ServingDep) -> dict[str, Any]:
    """Remove prefix ``name``'s file (or PEFT folder) from the folder, atomically, and stop serving it.
    The name leaves the state's disabled list (a later upload of it starts enabled). Unknown -> 404."""
    if name == BASE_NAME:
        raise InvalidInput(f"{BUILT_IN} and cannot be deleted")
    result = await asyncio.to_thread(serving.registry.delete_prefix, name)
    return {
        "deleted": result.name,
        "digest": result.digest,
        "removed": list(result.removed),
        "was_enabled": result.was_enabled,
        "bank_version": serving.registry.snapshot.bank.version,
    }
