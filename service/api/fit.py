"""``POST /heads/{name}/fit`` (admin): fit a head from labelled examples as a background job (202 and
the job's URL); ``GET /heads/{name}/fit/{job}``: its state, progress, and result table.

The examples are checked before the job starts (a bad set: 4xx, nothing embedded or written). The job
runs the one fitting path of ``python -m service fit`` (:func:`service.fitting.run.fit_head`: the
examples through this server's pipeline, one request of ``fit_chunk_texts`` texts at a time) and
publishes the head through the registry (validated, written atomically, hot-loaded).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from service.api.auth import require_admin
from service.api.deps import RuntimeDep, ServingDep
from service.api.responses import error_responses
from service.api.schemas import check_text_inputs
from service.config import Settings
from service.fitting.jobs import FitJob
from service.fitting.task import (
    SELECT_CHOICES,
    FitLimits,
    FitTask,
    candidate_names,
    check_examples,
    check_head_name,
    parse_select,
)
from service.runtime import Serving

router = APIRouter(prefix="/heads", tags=["heads"], dependencies=[Depends(require_admin)])


class FitExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The example's text.")
    label: StrictStr | StrictInt = Field(description="Its label (a number is taken as its decimal string).")

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return check_text_inputs(value)


class FitRequest(BaseModel):
    """``POST /heads/{name}/fit``."""

    model_config = ConfigDict(extra="forbid")

    examples: list[FitExample] = Field(description="Labelled examples (at most fit_max_examples).")
    select: str = Field(
        "auto",
        max_length=4096,
        description=f"Which inputs the head reads: {', '.join(SELECT_CHOICES)}, or comma-separated names "
        "(base and enabled prefixes).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the CV folds and the probe.")
    description: str | None = Field(None, max_length=1000, description="What the head predicts.")


async def _fit_and_publish(
    serving: Serving, settings: Settings, task: FitTask, job: FitJob
) -> dict[str, Any]:
    # Imported by the first fit, not with the app: scikit-learn is not needed to serve.
    from service.fitting.run import fit_head
    from service.heads.writer import head_bytes

    outcome = await fit_head(
        serving.pipeline,
        task,
        limits=FitLimits.from_settings(settings),
        chunk_texts=settings.fit_chunk_texts,
        timeout_s=settings.fit_timeout_s,
        progress=job.progress,
        model=settings.model_path(),
    )
    job.progress("write", 0, 1)
    data = head_bytes(outcome.params, serving.encoder.spec)
    head, created = await asyncio.to_thread(serving.registry.put_head, task.name, data)
    return outcome.result() | {"head": {"name": head.name, "digest": head.digest, "created": created}}


@router.post(
    "/{name}/fit",
    status_code=202,
    responses={
        202: {"description": "The fit job started: GET its url for its state, progress and result"},
        **error_responses(400, 401, 403, 409, 413, 422, 429, 503),
    },
)
async def start_fit(name: str, body: FitRequest, serving: ServingDep, runtime: RuntimeDep) -> JSONResponse:
    """Fit head ``name`` from ``examples``: checked now (4xx, nothing written), then fitted by a job."""
    settings = runtime.settings
    check_head_name(name)
    examples = check_examples(
        [e.text for e in body.examples],
        [str(e.label) for e in body.examples],
        FitLimits.from_settings(settings),
    )
    names = candidate_names(serving.pipeline.snapshot())
    parse_select(body.select, names)
    examples.check_size(len(names), serving.pipeline.dim, FitLimits.from_settings(settings))
    task = FitTask(name, examples, body.select, body.seed, body.description)
    job = runtime.fit_jobs.start(
        name, body.select, len(examples.texts), lambda j: _fit_and_publish(serving, settings, task, j)
    )
    return JSONResponse(job.doc(), status_code=202, headers={"Location": job.url})


@router.get("/{name}/fit/{job_id}", responses=error_responses(401, 403, 404))
async def fit_status(name: str, job_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """A fit job: ``state`` (running, succeeded, failed, cancelled), ``progress`` (stage, done, total),
    ``result`` (the chosen inputs, CV accuracies against base and all, the table of what was tried, the
    written head) or ``error``."""
    return runtime.fit_jobs.get(name, job_id).doc()
