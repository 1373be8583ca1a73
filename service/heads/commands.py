"""``python -m service predict``: the task heads of a prefix folder on some texts, without a server
(registered in service/cli.py). ``--json`` prints exactly what ``POST /predict`` returns."""

from __future__ import annotations

import logging
from typing import Annotated

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
    from service.embedding import dumps_document, embed_sync
    from service.engine.factory import build_encoder
    from service.errors import PrefixEmbedError
    from service.heads.predict import plan_predict, render_predict_document
    from service.registry.registry import PrefixRegistry

    logging.basicConfig(level=logging.WARNING)
    encoder = build_encoder(settings)
    snap = PrefixRegistry.from_settings(settings, encoder.spec).scan()
    for r in (*snap.rejected, *snap.heads.rejected):
        typer.echo(f"rejected {r.reason}", err=True)
    try:
        plan = plan_predict(snap.heads, task or None)
        vectors, tokens = embed_sync(encoder, snap.bank, plan.names, texts)
        doc = render_predict_document(
            model=settings.model_name(), plan=plan, vectors=vectors, prompt_tokens=tokens
        )
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(dumps_document(doc).decode())
        return
    for item in doc["data"]:
        for name, p in item["predictions"].items():
            typer.echo(f"[{item['index']}] {name:<24} {p['label']}  ({p['score']:.3f})")
