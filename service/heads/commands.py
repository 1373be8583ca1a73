"""``python -m service predict``: the task heads of a prefix folder on some texts, without a server
(registered in service/cli.py). ``--json`` prints exactly what ``POST /predict`` returns."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from service.config import Settings


def predict(
    settings: Settings,
    texts: Annotated[list[str], typer.Argument(help="Texts to predict.")],
    task: Annotated[
        list[str] | None, typer.Option("--task", help="Head name (repeat); default: every available head.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the POST /predict response document.")
    ] = False,
) -> None:
    """Predict TEXTS with the task heads of the prefix folder (heads/NAME.safetensors), as the server does."""
    from service.errors import PrefixEmbedError
    from service.heads.predict import plan_predict, render_predict_document
    from service.oneshot import run_pipeline
    from service.pipeline import EmbeddingPipeline
    from service.wire.document import dumps_document

    logging.basicConfig(level=logging.WARNING)

    async def work(pipeline: EmbeddingPipeline) -> dict[str, Any]:
        snap = pipeline.snapshot()
        plan = plan_predict(snap.heads, task or None)
        out = await pipeline.embed(texts, pipeline.select(snap, plan.names))
        return render_predict_document(
            model=settings.model_name(), plan=plan, vectors=out.vectors, prompt_tokens=out.prompt_tokens
        )

    try:
        doc = run_pipeline(settings, work, on_rejected=lambda r: typer.echo(f"rejected {r.reason}", err=True))
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(dumps_document(doc).decode())
        return
    for item in doc["data"]:
        for name, p in item["predictions"].items():
            typer.echo(f"[{item['index']}] {name:<24} {p['label']}  ({p['score']:.3f})")
