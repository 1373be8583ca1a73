"""``POST /embed``: every requested prefix's vector of every input, from one snapshot and one batch."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api.auth import require_api_key
from service.api.deps import RuntimeDep, ServingDep
from service.api.disconnect import cancel_on_disconnect
from service.api.rendering import json_response
from service.api.responses import EMBED_ERRORS
from service.api.schemas import EmbedRequest, check_prefix_list, texts_of
from service.digests import digests_header
from service.embedding import choose_prefixes, render_embed_document

router = APIRouter(tags=["embeddings"], dependencies=[Depends(require_api_key)], responses=EMBED_ERRORS)


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request, serving: ServingDep, runtime: RuntimeDep) -> Response:
    """Embed ``inputs`` under ``prefixes`` (null: every enabled prefix), separately or concatenated."""
    texts = texts_of(body.inputs, runtime.settings.max_client_batch)
    requested = check_prefix_list(body.prefixes)
    snap = serving.registry.snapshot  # one snapshot for the whole request: no mixed versions
    names = choose_prefixes(snap.bank, snap.enabled, requested, include_base=runtime.settings.include_base)
    out = await cancel_on_disconnect(
        request, serving.batcher.embed(texts, snap.bank, snap.bank.indices(names), truncate=body.truncate)
    )
    runtime.metrics.embeddings.labels("/embed").inc(len(texts) * len(names))
    used = [snap.bank.get(n) for n in names]
    response = await json_response(
        lambda: render_embed_document(
            model=runtime.model_name,
            prefixes=used,
            vectors=out.vectors,
            prompt_tokens=out.prompt_tokens,
            combine=body.combine,
            normalize=body.normalize,
            encoding=body.encoding,
        ),
        numbers=out.vectors.size,
    )
    response.headers.update(digests_header(used, runtime.prefix_sets))
    return response
