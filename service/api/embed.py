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
from service.wire.document import render_embed_document

router = APIRouter(tags=["embeddings"], dependencies=[Depends(require_api_key)], responses=EMBED_ERRORS)


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request, serving: ServingDep, runtime: RuntimeDep) -> Response:
    """Embed ``inputs`` under ``prefixes`` (null: the default served model), separately or concatenated."""
    texts = texts_of(body.inputs, runtime.settings.max_client_batch)
    pipeline = serving.pipeline
    selection = pipeline.select(pipeline.snapshot(), check_prefix_list(body.prefixes))
    out = await cancel_on_disconnect(
        request, pipeline.embed(texts, selection, truncate=body.truncate, route="/embed")
    )
    response = await json_response(
        lambda: render_embed_document(
            model=runtime.model_name,
            prefixes=out.prefixes,
            vectors=out.vectors,
            prompt_tokens=out.prompt_tokens,
            calibrations=out.calibrations,
            combine=body.combine,
            normalize=body.normalize,
            encoding=body.encoding,
        ),
        numbers=out.vectors.size,
    )
    response.headers.update(digests_header(out.prefixes, runtime.prefix_sets))
    return response
