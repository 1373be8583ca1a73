"""``POST /predict``: every requested task head's prediction of every input, from one snapshot and one
embedding batch over the union of the heads' input prefixes (heads are a matrix product after pooling)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api.auth import require_api_key
from service.api.deps import RuntimeDep, ServingDep
from service.api.disconnect import cancel_on_disconnect
from service.api.rendering import json_response
from service.api.responses import EMBED_ERRORS
from service.api.schemas import PredictRequest, check_prefix_list, texts_of
from service.digests import digests_header
from service.heads.predict import plan_predict, render_predict_document

router = APIRouter(tags=["predictions"], dependencies=[Depends(require_api_key)], responses=EMBED_ERRORS)


@router.post("/predict")
async def predict(
    body: PredictRequest, request: Request, serving: ServingDep, runtime: RuntimeDep
) -> Response:
    """Predict ``inputs`` with the heads named in ``tasks`` (null: every enabled, available head)."""
    texts = texts_of(body.inputs, runtime.settings.max_client_batch)
    tasks = check_prefix_list(body.tasks, "tasks", "every available head")
    pipeline = serving.pipeline
    snap = pipeline.snapshot()  # one snapshot: the heads and the bank they were checked against
    plan = plan_predict(snap.heads, tasks)
    selection = pipeline.select(snap, plan.names)
    out = await cancel_on_disconnect(
        request, pipeline.embed(texts, selection, truncate=body.truncate, route="/predict")
    )
    for head in plan.heads:
        runtime.metrics.predictions.labels(head.name).inc(len(texts))
    response = await json_response(
        lambda: render_predict_document(
            model=runtime.model_name, plan=plan, vectors=out.vectors, prompt_tokens=out.prompt_tokens
        ),
        numbers=len(texts) * sum(len(h.labels) for h in plan.heads),
    )
    response.headers.update(digests_header(out.prefixes, runtime.prefix_sets))
    return response
