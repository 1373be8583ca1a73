"""OpenAI-compatible ``POST /v1/embeddings`` (and ``GET /v1/models``), so OpenAI clients work unchanged.

``model`` is a served model (a fixed prefix set of the prefix folder's ``models.json``; the served
name stands for the default one), or a prefix name (that prefix's vector; ``base`` is the backbone's
own vector). Served models are tried first, so a dropped-in file can never take over a model's name.
"""

from __future__ import annotations

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
from service.errors import InvalidInput, PrefixEmbedError, PrefixSetNotFound, shown
from service.wire.document import render_embed_document

router = APIRouter(prefix="/v1", tags=["openai"], dependencies=[Depends(require_api_key)])


@router.post("/embeddings", responses=EMBED_ERRORS)
async def create_embeddings(
    body: OpenAIEmbeddingRequest, request: Request, serving: ServingDep, runtime: RuntimeDep
) -> Response:
    texts = texts_of(body.input, runtime.settings.max_client_batch, field="input")
    pipeline = serving.pipeline
    selection = pipeline.select_model(pipeline.snapshot(), body.model)
    dim = pipeline.dim * len(selection.slots)
    if body.dimensions is not None and body.dimensions != dim:
        raise InvalidInput(
            f"dimensions={body.dimensions} is not available: model {shown(body.model)} has {dim}"
        )
    out = await cancel_on_disconnect(request, pipeline.embed(texts, selection, route="/v1/embeddings"))

    def build() -> dict[str, Any]:
        doc = render_embed_document(
            model=body.model,
            prefixes=out.prefixes,
            vectors=out.vectors,
            prompt_tokens=out.prompt_tokens,
            calibrations=out.calibrations,
            combine="concat",
            normalize=True,
            encoding=body.encoding_format,
        )
        data = [
            {"object": "embedding", "index": d["index"], "embedding": d["embedding"]} for d in doc["data"]
        ]
        return {"object": "list", "data": data, "model": body.model, "usage": doc["usage"]}

    response = await json_response(build, numbers=out.vectors.size)
    response.headers.update(
        digests_header(out.prefixes, runtime.prefix_sets)
    )  # which prefix versions made them
    return response


@router.get("/models", responses=READ_ERRORS)
async def list_models(serving: ServingDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Every served model (with its dimension, members and whether it can be served now), then every
    enabled prefix; each ``id`` is usable as ``model``."""
    pipeline = serving.pipeline
    snap = pipeline.snapshot()
    created = int(runtime.started_at)
    names = [*snap.served.models]
    if pipeline.served_name not in snap.served.models:
        names.append(pipeline.served_name)  # the default model's alias
    entries: list[dict[str, Any]] = []
    for name in [*names, *snap.enabled_names()]:
        entry: dict[str, Any] = {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "prefix-embed",
        }
        try:
            selection = pipeline.select_model(snap, name)
        except PrefixEmbedError as exc:
            entry.update(available=False, reason=exc.message)
        else:
            entry.update(
                available=True,
                dimension=pipeline.dim * len(selection.slots),
                prefixes=[{"name": p.name, "digest": p.digest} for p in selection.prefixes],
            )
        entries.append(entry)
    return {"object": "list", "data": entries}


@router.get("/prefix-sets/{digest}", responses=error_responses(401, 404, 503))
async def prefix_set(digest: str, serving: ServingDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The prefixes and digests behind an ``x-prefix-set-digest`` whose list was too long for the
    ``x-prefix-digests`` header: a set this process served recently, or a served model's current set."""
    pairs = runtime.prefix_sets.get(digest)
    if pairs is None:
        pipeline = serving.pipeline
        snap = pipeline.snapshot()
        for model in [*snap.served.models, pipeline.served_name]:
            try:
                selection = pipeline.select_model(snap, model)
            except PrefixEmbedError:
                continue  # unavailable now: it has no current set
            current = tuple((p.name, p.digest) for p in selection.prefixes)
            if set_digest(current) == digest:
                pairs = current
                break
    if pairs is None:
        raise PrefixSetNotFound(
            f"unknown prefix set {shown(digest)}: not a set this server answered with recently, nor a "
            "served model's current set; /embed lists every digest in its body"
        )
    return {
        "object": "prefix_set",
        "id": digest,
        "count": len(pairs),
        "prefixes": [{"name": name, "digest": d} for name, d in pairs],
    }
