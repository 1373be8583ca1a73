"""``python -m service``: serve, ray-serve, embed, predict, fit, export-onnx, train, evaluate,
similarity, calibrate, models, bench."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from service.bench.commands import bench_app
from service.config import Settings
from service.fitting.command import fit_cmd
from service.heads.commands import predict
from service.method.calibrate_command import calibrate_cmd
from service.method.commands import evaluate_cmd, similarity_cmd, train_cmd
from service.registry.commands import models_app
from service.serving.ray_launch import ray_serve_cmd
from service.settings_cli import (
    EMBEDDING,
    ENGINE,
    FIT,
    ONNX_EXPORT,
    PREFIX_FOLDER,
    TORCH_ENGINE,
    settings_command,
)
from service.wire import Combine, Encoding

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def serve(settings: Settings) -> None:
    """Run the HTTP service. Every setting is a flag and a PREFIX_EMBED_* variable; flags win."""
    from service.app import create_app
    from service.server import build_server

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    web = create_app(settings)
    server = build_server(web, settings)
    runtime = web.state.runtime
    runtime.on_fatal = lambda: setattr(server, "should_exit", True)
    server.run()
    if runtime.load_error is not None:
        typer.echo(f"error: start-up failed: {runtime.load_error}", err=True)
        raise typer.Exit(1)


def embed(
    settings: Settings,
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
    prefix: Annotated[
        list[str] | None,
        typer.Option(
            "--prefix", help="Prefix name (repeat); default: the default served model (models.json)."
        ),
    ] = None,
    combine: Annotated[
        Combine, typer.Option(help="One vector per prefix, or their concatenation.")
    ] = "separate",
    encoding: Annotated[Encoding, typer.Option(help="Vector encoding (as POST /embed's).")] = "float",
    normalize: Annotated[bool, typer.Option(help="L2-normalize each vector.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the POST /embed response document.")] = False,
) -> None:
    """Embed TEXTS under the prefixes of a folder, without a server (the routes' own pipeline)."""
    from service.errors import PrefixEmbedError
    from service.oneshot import run_pipeline
    from service.pipeline import Embedded, EmbeddingPipeline
    from service.wire.document import dumps_document, render_embed_document

    logging.basicConfig(level=logging.WARNING)

    async def work(pipeline: EmbeddingPipeline) -> Embedded:
        selection = pipeline.select(pipeline.snapshot(), prefix or None)
        return await pipeline.embed(texts, selection)

    try:
        out = run_pipeline(settings, work, on_rejected=lambda r: typer.echo(f"rejected {r.reason}", err=True))
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    doc = render_embed_document(
        model=settings.model_name(),
        prefixes=out.prefixes,
        vectors=out.vectors,
        prompt_tokens=out.prompt_tokens,
        calibrations=out.calibrations,
        combine=combine,
        normalize=normalize,
        encoding=encoding,
    )
    if as_json:
        typer.echo(dumps_document(doc).decode())
        return
    for item in doc["data"]:
        for name, vec in item.get("embeddings", {"concat": item.get("embedding")}).items():
            head = ", ".join(f"{x:+.4f}" for x in vec[:6]) if encoding == "float" else str(vec)[:60]
            typer.echo(
                f"[{item['index']}] {name:<24} dim={len(vec) if encoding == 'float' else '-'}  [{head}, ...]"
            )


def export_onnx(
    settings: Settings,
    force: Annotated[bool, typer.Option(help="Export again even if a valid cached file exists.")] = False,
    fan_out: Annotated[
        int,
        typer.Option(
            help="Fan-out depth of the graph: 0 (every layer per row) or S, for shared-trunk prefixes "
            "starting at layer S (serve exports a depth on its first use; this does it ahead)."
        ),
    ] = 0,
) -> None:
    """Export the prefix-enabled backbone to ONNX (validated against torch) into the ONNX cache;
    with ``--dtype int8`` also its int8 graph (checked against the float32 one)."""
    from service.backend import onnx_exporter
    from service.engine.ort_runtime import check_ort_install
    from service.errors import PrefixEmbedError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_ort_install()
    try:
        result = onnx_exporter(settings)(fan_out, force)
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    verb = "exported" if result.exported else "reused"
    what = "int8 - float32" if result.key.dtype == "int8" else "ORT - torch"
    typer.echo(f"{verb} {result.path} (max |{what}| = {result.max_abs_diff:.2g})")


app.command("serve")(settings_command(serve))
app.command("ray-serve")(settings_command(ray_serve_cmd))
app.command("embed")(settings_command(embed, (*ENGINE, *PREFIX_FOLDER, *EMBEDDING)))
app.command("predict")(settings_command(predict, (*ENGINE, *PREFIX_FOLDER, *EMBEDDING)))
app.command("fit")(settings_command(fit_cmd, (*ENGINE, *PREFIX_FOLDER, *EMBEDDING, *FIT)))
app.command("export-onnx")(settings_command(export_onnx, ONNX_EXPORT))
app.command("train")(settings_command(train_cmd, ("model",)))
app.command("evaluate")(settings_command(evaluate_cmd, ("model",)))
app.command("similarity")(settings_command(similarity_cmd, ("model",)))
app.command("calibrate")(settings_command(calibrate_cmd, (*TORCH_ENGINE, *PREFIX_FOLDER)))
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
