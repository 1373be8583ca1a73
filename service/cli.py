"""``python -m service``: serve, embed, train, evaluate, similarity, export-onnx, bench."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from service.config import Settings
from service.settings_cli import settings_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def _register_method_commands() -> None:
    """train / evaluate / similarity live in service/method/commands.py."""
    from service.method.commands import evaluate_cmd, similarity_cmd, train_cmd

    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("similarity")(similarity_cmd)


_register_method_commands()


def _register_models_commands() -> None:
    """models pin / show live in service/registry/commands.py."""
    from service.registry.commands import models_app

    app.add_typer(models_app, name="models")


_register_models_commands()


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


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


app.command("serve")(settings_command(serve))


def ray_serve(
    settings: Settings,
    replicas: Annotated[int, typer.Option(min=1, help="Fixed number of replicas.")] = 1,
    autoscale: Annotated[
        str | None, typer.Option(help="MIN:MAX replicas, autoscaled on ongoing requests.")
    ] = None,
    replica_cpus: Annotated[float, typer.Option(min=0, help="CPUs Ray reserves per replica.")] = 1.0,
    replica_gpus: Annotated[float, typer.Option(min=0, help="GPUs Ray reserves per replica.")] = 0.0,
    max_ongoing_requests: Annotated[
        int, typer.Option(min=1, help="Requests in flight per replica (the batcher batches them).")
    ] = 64,
) -> None:
    """Serve on Ray Serve (needs the `ray` extra): replicas behind Ray's proxy on --host/--port, on a
    local Ray or RAY_ADDRESS, until SIGINT/SIGTERM. Every other flag is serve's (every Settings field)."""
    from service.serving.ray_launch import main

    raise typer.Exit(
        main(
            settings,
            replicas=replicas,
            autoscale=autoscale,
            replica_cpus=replica_cpus,
            replica_gpus=replica_gpus,
            max_ongoing_requests=max_ongoing_requests,
        )
    )


app.command("ray-serve")(settings_command(ray_serve))


def _register_head_commands() -> None:
    """predict lives in service/heads/commands.py."""
    from service.heads.commands import predict

    app.command("predict")(settings_command(predict))


_register_head_commands()


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
    prefix_dir: Annotated[Path | None, typer.Option(help="Prefix folder.")] = None,
    prefix: Annotated[
        list[str] | None,
        typer.Option(
            "--prefix", help="Prefix name (repeat); default: the default served model (models.json)."
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model folder (default: all-MiniLM-L6-v2).")] = None,
    combine: Annotated[str, typer.Option(help="separate | concat")] = "separate",
    encoding: Annotated[str, typer.Option(help="float | base64 | binary | int8")] = "float",
    normalize: Annotated[bool, typer.Option(help="L2-normalize each vector.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the POST /embed response document.")] = False,
) -> None:
    """Embed TEXTS under the prefixes of a folder, without a server (the routes' own pipeline)."""
    from service.errors import PrefixEmbedError
    from service.oneshot import run_pipeline
    from service.pipeline import Embedded, EmbeddingPipeline
    from service.wire.document import dumps_document, render_embed_document

    logging.basicConfig(level=logging.WARNING)
    settings = _settings(prefix_dir=prefix_dir, model=model)

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


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (numbers go to BENCHMARKS.md).")
app.add_typer(bench_app, name="bench")


@bench_app.command("engine")
def bench_engine(
    model: Annotated[Path | None, typer.Option(help="Model folder (default: all-MiniLM-L6-v2).")] = None,
    texts: Annotated[int, typer.Option(help="B: texts per batch.")] = 32,
    prefixes: Annotated[int, typer.Option(help="P: prefixes per text.")] = 8,
    prefix_len: Annotated[int, typer.Option(help="Prefix length.")] = 16,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per variant.")] = 5,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | float16 | bfloat16")] = "auto",
    chunk_rows: Annotated[int, typer.Option(help="Rows per model call (0 = one call).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    trunk: Annotated[
        bool,
        typer.Option(
            help="Shared-trunk sweep instead: P in 1..16 x S in {0, L/2, L-2, L-1}, vectors/s and the "
            "ratio to S = 0 (CPU row chunks as served); --out also gets a .md table and a .png plot."
        ),
    ] = False,
) -> None:
    """One batched call vs P sequential calls vs the plain backbone on the same rows (or --trunk)."""
    from service.bench.engine import run_engine_bench

    if trunk:
        from service.bench.trunk import markdown_table, plot_trunk, run_trunk_bench

        sweep = run_trunk_bench(
            _settings(model=model, device=device, dtype=dtype, forward_chunk_rows=chunk_rows or None),
            n_texts=texts,
            prefix_len=prefix_len,
            repeats=repeats,
        )
        typer.echo(json.dumps(sweep, indent=2))
        typer.echo(markdown_table(sweep))
        if out:
            out.write_text(json.dumps(sweep, indent=2) + "\n")
            out.with_suffix(".md").write_text(markdown_table(sweep) + "\n")
            if plot_trunk(sweep, out.with_suffix(".png")) is None:
                typer.echo("matplotlib is not installed: no plot")
        return

    result = run_engine_bench(
        _settings(model=model, device=device, dtype=dtype, forward_chunk_rows=chunk_rows),
        n_texts=texts,
        n_prefixes=prefixes,
        prefix_len=prefix_len,
        repeats=repeats,
    )
    typer.echo(json.dumps(result, indent=2))
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")


@bench_app.command("service")
def bench_service(
    out_dir: Annotated[Path, typer.Option(help="Where results, logs and the plot go.")] = Path(
        "bench-results"
    ),
    model: Annotated[Path | None, typer.Option(help="Model folder (default: all-MiniLM-L6-v2).")] = None,
    backbone: Annotated[
        str, typer.Option(help="minilm | bert-base (random BERT-base-sized weights, for GPU speed runs).")
    ] = "minilm",
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto | float32 | float16 | bfloat16")] = "auto",
    texts: Annotated[int, typer.Option(help="Texts per phase.")] = 64,
    prefixes: Annotated[int, typer.Option(help="P of the concurrency sweep and the ratios.")] = 8,
    prefix_len: Annotated[int, typer.Option(help="Prefix length.")] = 16,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,8,64",
    scaling: Annotated[
        str, typer.Option(help="P values of the scaling run, comma-separated.")
    ] = "1,2,4,8,16",
    encoding: Annotated[str, typer.Option(help="Response encoding of /embed: base64 | float.")] = "base64",
    seq_len: Annotated[
        int | None, typer.Option(help="Fixed text length in tokens (long texts truncated to it).")
    ] = None,
    max_batch_tokens: Annotated[int, typer.Option(help="Token budget of one forward call.")] = 32768,
    chunk_rows: Annotated[
        int | None, typer.Option(help="Rows per model call (default: device policy).")
    ] = None,
    peer: Annotated[bool, typer.Option(help="Also run infinity-emb (MiniLM only).")] = True,
    peer_exe: Annotated[
        Path | None, typer.Option(help="infinity_emb executable (its own venv; default: the one on PATH).")
    ] = None,
    policy: Annotated[bool, typer.Option(help="Also compare the batcher's slot policies in-process.")] = True,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds of the headline ratios.")] = 3,
    shapes: Annotated[
        bool, typer.Option(help="Also shapes (a) 1 text c=1, (b) 1 text c=32, (c) 32 texts c=4 vs infinity.")
    ] = True,
    only_shapes: Annotated[bool, typer.Option(help="Run only the shape comparison.")] = False,
    shape_scale: Annotated[float, typer.Option(help="x the request count of each shape.")] = 1.0,
    peer_onnx_dir: Annotated[
        Path | None, typer.Option(help="infinity's ONNX export folder (made once if missing).")
    ] = None,
) -> None:
    """The service under loopback load: throughput and latency, ratios, P scaling plot, peer."""
    from service.bench.report import markdown, plot_scaling
    from service.bench.service_bench import ServiceBench, ServiceBenchConfig

    logging.basicConfig(level=logging.WARNING)
    cfg = ServiceBenchConfig(
        out_dir=out_dir,
        model=model,
        backbone=backbone,
        device=device,
        dtype=dtype,
        texts=texts,
        prefixes=prefixes,
        prefix_len=prefix_len,
        concurrency=[int(c) for c in concurrency.split(",")],
        scaling=[int(p) for p in scaling.split(",")],
        encoding=encoding,
        seq_len=seq_len,
        max_batch_tokens=max_batch_tokens,
        chunk_rows=chunk_rows,
        peer=peer,
        peer_exe=peer_exe,
        policy=policy,
        rounds=rounds,
        shapes=shapes,
        only_shapes=only_shapes,
        shape_scale=shape_scale,
        peer_onnx_dir=peer_onnx_dir,
    )
    result = ServiceBench(cfg).run()
    (out_dir / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_scaling(result, out_dir / "service_scaling.png")
    md = markdown(result)
    (out_dir / "service.md").write_text(md + "\n")
    typer.echo(md)


def _register_bench_predict() -> None:
    from service.bench.predict import bench_predict_cmd

    bench_app.command("predict")(bench_predict_cmd)


_register_bench_predict()


@bench_app.command("soak")
def bench_soak(
    duration: Annotated[float, typer.Option(help="Seconds of load and swaps.")] = 60.0,
    concurrency: Annotated[int, typer.Option(help="Concurrent clients.")] = 8,
    swap_every: Annotated[
        float, typer.Option(help="Seconds between swaps (in place, rename, PATCH in turn).")
    ] = 1.0,
    backend: Annotated[str | None, typer.Option(help="Server backend (default: its own default).")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where the server log and soak.json go.")] = None,
) -> None:
    """Hot-swap soak: load + prefix swaps in place and by rename + PATCH toggles, every vector checked
    against its digest's reference; exits 1 on a torn version, a mismatch or a 5xx."""
    from service.bench.soak import SoakConfig, run_soak

    logging.basicConfig(level=logging.WARNING)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    cfg = SoakConfig(
        duration_s=duration,
        concurrency=concurrency,
        swap_every_s=swap_every,
        backend=backend,
        out_dir=out_dir,
    )
    summary = run_soak(cfg).summary()
    text = json.dumps(summary, indent=2)
    if out_dir is not None:
        (out_dir / "soak.json").write_text(text + "\n")
    typer.echo(text)
    if not summary["ok"]:
        raise typer.Exit(1)


@bench_app.command("onnx")
def bench_onnx(
    model: Annotated[Path | None, typer.Option(help="Model folder (default: all-MiniLM-L6-v2).")] = None,
    texts: Annotated[int, typer.Option(help="B: texts per batch.")] = 32,
    prefixes: Annotated[int, typer.Option(help="P: prefixes per text.")] = 8,
    prefix_len: Annotated[int, typer.Option(help="Prefix length.")] = 16,
    rounds: Annotated[int, typer.Option(help="Interleaved timed rounds (torch, ORT alternate).")] = 7,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | float16")] = "auto",
    chunk_rows: Annotated[
        int | None, typer.Option(help="Rows per model call for both (default: each backend's own).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads of both backends (default: their own).")
    ] = None,
    onnx_cache_dir: Annotated[Path | None, typer.Option(help="Where ONNX exports are cached.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """ONNX Runtime vs torch side by side on the same rows (parity and throughput)."""
    from service.bench.onnx import run_onnx_bench

    logging.basicConfig(level=logging.WARNING)
    settings = _settings(
        model=model,
        backend="onnx",
        device=device,
        dtype=dtype,
        forward_chunk_rows=chunk_rows,
        onnx_cache_dir=onnx_cache_dir,
    )
    result = run_onnx_bench(
        settings, n_texts=texts, n_prefixes=prefixes, prefix_len=prefix_len, rounds=rounds, threads=threads
    )
    typer.echo(json.dumps(result, indent=2))
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")


@app.command("export-onnx")
def export_onnx(
    model: Annotated[Path | None, typer.Option(help="Model folder (default: all-MiniLM-L6-v2).")] = None,
    pooling: Annotated[str | None, typer.Option(help="mean | cls | multilayer")] = None,
    pooling_layers: Annotated[int | None, typer.Option(help="Layers of multilayer pooling.")] = None,
    onnx_cache_dir: Annotated[Path | None, typer.Option(help="Where ONNX exports are cached.")] = None,
    force: Annotated[bool, typer.Option(help="Export again even if a valid cached file exists.")] = False,
    fan_out: Annotated[
        int,
        typer.Option(
            help="Fan-out depth of the graph: 0 (every layer per row) or S, for shared-trunk prefixes "
            "starting at layer S (serve exports a depth on its first use; this does it ahead)."
        ),
    ] = 0,
) -> None:
    """Export the prefix-enabled backbone to ONNX (validated against torch) into the ONNX cache."""
    from service.engine.onnx_export import ensure_onnx_export
    from service.engine.ort_runtime import check_ort_install
    from service.errors import PrefixEmbedError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = _settings(
        model=model, pooling=pooling, pooling_layers=pooling_layers, onnx_cache_dir=onnx_cache_dir
    )
    check_ort_install()
    try:
        result = ensure_onnx_export(
            settings.model_path(),
            settings.onnx_cache_dir,
            pooling=settings.pooling,
            pooling_layers=settings.pooling_layers,
            force=force,
            fan_out=fan_out,
        )
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    verb = "exported" if result.exported else "reused"
    typer.echo(f"{verb} {result.path} (max |ORT - torch| = {result.max_abs_diff:.2g})")
