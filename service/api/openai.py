"""OpenAI-compatible ``POST /v1/embeddings`` (and ``GET /v1/models``), so OpenAI clients work unchanged.

``model`` is a prefix name (that prefix's vector; ``base`` is the backbone's own vector) or the
served model name (the concat of every enabled prefix, in bank order: ``base`` first when the
``include_base`` setting is on, then the others by name). A prefix name wins if both match.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api.auth import require_api_key
from service.api.deps import RuntimeDep, ServingDep
from service.api.disconnect import cancel_on_disconnect
from service.api.rendering import json_response
from service.api.responses import EMBED_ERRORS, READ_ERRORS, error_responses
from service.api.schemas import OpenAIEmbeddingRequest, texts_of
from service.digests import digests_header, set_digest
from service.embedding import choose_prefixes, render_embed_document
from service.errors import (
    InvalidInput,
    PrefixEmbedError,
    PrefixNotFound,
    PrefixSetNotFound,
    shown,
    shown_list,
)
from service.registry.registry import Snapshot

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])


def resolve_model(model: str, snap: Snapshot, served_name: str, *, include_base: bool = True) -> list[str]:
    """The prefix names ``model`` stands for (``base``: the backbone's own vector)."""
    if model in snap.bank.names:
        return choose_prefixes(snap.bank, snap.enabled, [model])
    if model == served_name:
        return choose_prefixes(snap.bank, snap.enabled, None, include_base=include_base)
    known = shown_list(snap.bank.names, quoted=False) or "none"
    raise PrefixNotFound(
        f"model {shown(model)} not found: use {served_name!r} (every enabled prefix, concatenated) "
        f"or a prefix name ({known})"
    )


@router.post("/embeddings", responses=EMBED_ERRORS)
async def create_embeddings(
    body: OpenAIEmbeddingRequest, request: Request, serving: ServingDep, runtime: RuntimeDep
) -> Response:
    texts = texts_of(body.input, runtime.settings.max_client_batch, field="input")
    snap = serving.registry.snapshot
    names = resolve_model(body.model, snap, runtime.model_name, include_base=runtime.settings.include_base)
    dim = serving.encoder.dim * len(names)
    if body.dimensions is not None and body.dimensions != dim:
        raise InvalidInput(
            f"dimensions={body.dimensions} is not available: model {shown(body.model)} has {dim}"
        )
    out = await cancel_on_disconnect(
        request, serving.batcher.embed(texts, snap.bank, snap.bank.indices(names), truncate=True)
    )
    runtime.metrics.embeddings.labels("/v1/embeddings").inc(len(texts) * len(names))
    used = [snap.bank.get(n) for n in names]

    def build() -> dict[str, Any]:
        doc = render_embed_document(
            model=body.model,
            prefixes=used,
            vectors=out.vectors,
            prompt_tokens=out.prompt_tokens,
            combine="concat",
            normalize=True,
            encoding=body.encoding_format,
        )
        data = [
            {"object": "embedding", "index": d["index"], "embedding": d["embedding"]} for d in doc["data"]
        ]
        return {"object": "list", "data": data, "model": body.model, "usage": doc["usage"]}

    response = await json_response(build, numbers=out.vectors.size)
    response.headers.update(digests_header(used, runtime.prefix_sets))  # which prefix versions made them
    return response


@router.get("/models", responses=READ_ERRORS)
async def list_models(serving: ServingDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The served model name and every enabled prefix, each usable as ``model``."""
    snap = serving.registry.snapshot
    created = int(runtime.started_at)
    ids = [runtime.model_name, *snap.enabled_names()]
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": created, "owned_by": "prefix-embed"} for i in ids],
    }


@router.get("/prefix-sets/{digest}", responses=error_responses(401, 404, 503))
async def prefix_set(digest: str, serving: ServingDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The prefixes and digests behind an ``x-prefix-set-digest`` whose list was too long for the
    ``x-prefix-digests`` header: a set this process served recently, or the served model's current set."""
    pairs = runtime.prefix_sets.get(digest)
    if pairs is None:
        snap = serving.registry.snapshot
        with contextlib.suppress(PrefixEmbedError):  # no prefix enabled: the model has no set now
            names = resolve_model(
                runtime.model_name, snap, runtime.model_name, include_base=runtime.settings.include_base
            )
            current = tuple((n, snap.bank.get(n).digest) for n in names)
            pairs = current if set_digest(current) == digest else None
    if pairs is None:
        raise PrefixSetNotFound(
            f"unknown prefix set {shown(digest)}: not a set this server answered with recently, nor the "
            f"current set of {runtime.model_name!r}; /embed lists every digest in its body"
        )
    return {
        "object": "prefix_set",
        "id": digest,
        "count": len(pairs),
        "prefixes": [{"name": name, "digest": d} for name, d in pairs],
    }
