"""``python -m service bench ...``: engine, service, soak, onnx, ray, predict (added to the CLI in service/cli.py).

The model, device, dtype, row-chunk, pooling and ONNX options are the ``serve`` flags (generated from
Settings by :mod:`service.settings_cli`, with their ``PREFIX_EMBED_*`` variables); the rest are each
benchmark's own. Heavy imports happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from service.config import Settings
from service.settings_cli import BACKBONE, ONNX_ENGINE, TORCH_ENGINE, settings_command

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (numbers go to BENCHMARKS.md).")

Out = Annotated[Path | None, typer.Option(help="Write the results as JSON here.")]
Texts = Annotated[int, typer.Option(help="B: texts per batch.")]
Prefixes = Annotated[int, typer.Option(help="P: prefixes per text.")]
PrefixLen = Annotated[int, typer.Option(help="Prefix length.")]


def _report(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if out:
        out.write_text(text + "\n")


def engine_cmd(
    settings: Settings,
    texts: Texts = 32,
    prefixes: Prefixes = 8,
    prefix_len: PrefixLen = 16,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per variant.")] = 5,
    out: Out = None,
    trunk: Annotated[
        bool,
        typer.Option(
            help="Shared-trunk sweep instead: P in 1..16 x S in {0, L/2, L-2, L-1}, vectors/s and the "
            "ratio to S = 0 (CPU row chunks as served: --forward-chunk-rows 0 means the served policy "
            "here); --out also gets a .md table and a .png plot."
        ),
    ] = False,
) -> None:
    """One batched call vs P sequential calls vs the plain backbone on the same rows (or --trunk).
    Rows per model call default to 0 here (one call)."""
    if trunk:
        from service.bench.trunk import markdown_table, plot_trunk, run_trunk_bench

        chunks = settings.forward_chunk_rows or None
        sweep = run_trunk_bench(
            settings.model_copy(update={"forward_chunk_rows": chunks}),
            n_texts=texts,
            prefix_len=prefix_len,
            repeats=repeats,
        )
        _report(sweep, out)
        typer.echo(markdown_table(sweep))
        if out:
            out.with_suffix(".md").write_text(markdown_table(sweep) + "\n")
            if plot_trunk(sweep, out.with_suffix(".png")) is None:
                typer.echo("matplotlib is not installed: no plot")
        return
    from service.bench.engine import run_engine_bench

    result = run_engine_bench(
        settings, n_texts=texts, n_prefixes=prefixes, prefix_len=prefix_len, repeats=repeats
    )
    _report(result, out)


def service_cmd(
    settings: Settings,
    out_dir: Annotated[Path, typer.Option(help="Where results, logs and the plot go.")] = Path(
        "bench-results"
    ),
    backbone: Annotated[
        Literal["minilm", "bert-base"],
        typer.Option(
            help="minilm: the --model as installed | bert-base (random BERT-base-sized weights, GPU speed runs)."
        ),
    ] = "minilm",
    texts: Annotated[int, typer.Option(help="Texts per phase.")] = 64,
    prefixes: Annotated[int, typer.Option(help="P of the concurrency sweep and the ratios.")] = 8,
    prefix_len: PrefixLen = 16,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,8,64",
    scaling: Annotated[
        str, typer.Option(help="P values of the scaling run, comma-separated.")
    ] = "1,2,4,8,16",
    encoding: Annotated[
        Literal["base64", "float"], typer.Option(help="Response encoding of /embed.")
    ] = "base64",
    seq_len: Annotated[
        int | None, typer.Option(help="Fixed text length in tokens (long texts truncated to it).")
    ] = None,
    peer: Annotated[bool, typer.Option(help="Also run infinity-emb (on the same --model).")] = True,
    peer_exe: Annotated[
        Path | None, typer.Option(help="infinity_emb executable (its own venv; default: the one on PATH).")
    ] = None,
    policy: Annotated[bool, typer.Option(help="Also compare the batcher's slot policies in-process.")] = True,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds of the headline ratios.")] = 3,
    shapes: Annotated[
        bool, typer.Option(help="Also shapes (a) 1 text c=1, (b) 1 text c=32, (c) 32 texts c=4 vs infinity.")
    ] = True,
    only_shapes: Annotated[bool, typer.Option(help="Run only the shape comparison.")] = False,
    shape_variants: Annotated[
        str, typer.Option(help="Our servers at the shapes, comma-separated (service/bench/shapes.py).")
    ] = "ours,ours_int8,ours_torch",
    shape_models: Annotated[
        str,
        typer.Option(
            help="What our servers are asked for at the shapes, comma-separated (/v1/embeddings' model: "
            "base, a shipped prefix of --prefix-dir, a served model of its models.json), each interleaved; "
            "empty: one random all-layer prefix."
        ),
    ] = "",
    shape_p8: Annotated[
        bool, typer.Option(help="Also our server at (b) with P = 8 random all-layer prefixes per text.")
    ] = True,
    many_tasks: Annotated[
        bool, typer.Option(help="Also the many-task request (base + the shipped prefixes of --prefix-dir).")
    ] = True,
    shape_scale: Annotated[float, typer.Option(help="x the request count of each shape.")] = 1.0,
    peer_onnx_dir: Annotated[
        Path | None, typer.Option(help="infinity's ONNX export folder (made once if missing).")
    ] = None,
    cache_repeats: Annotated[
        str,
        typer.Option(
            help="Also the vector cache at shape (b): % of repeated texts, comma-separated (e.g. 0,50,90), "
            "cache on vs off side by side; empty: not run."
        ),
    ] = "",
    only_cache: Annotated[
        bool, typer.Option(help="Run only the cache comparison (--cache-repeats).")
    ] = False,
) -> None:
    """The service under loopback load: throughput and latency, ratios, P scaling plot, peer.
    Runs on the CPU unless --device (or PREFIX_EMBED_DEVICE) says otherwise."""
    from service.bench.report import markdown, plot_scaling
    from service.bench.service_bench import ServiceBench, ServiceBenchConfig
    from service.bench.shapes import OUR_VARIANTS

    logging.basicConfig(level=logging.WARNING)
    variants = tuple(v for v in shape_variants.split(",") if v)
    unknown = [v for v in variants if v not in OUR_VARIANTS]
    if unknown or not variants:
        raise typer.BadParameter(f"--shape-variants {shape_variants!r}: known are {', '.join(OUR_VARIANTS)}")
    cfg = ServiceBenchConfig(
        out_dir=out_dir, model=settings.model_path(), backbone=backbone, device=settings.device,
        dtype=settings.dtype, texts=texts, prefixes=prefixes, prefix_len=prefix_len,
        concurrency=[int(c) for c in concurrency.split(",")], scaling=[int(p) for p in scaling.split(",")],
        encoding=encoding, seq_len=seq_len, max_batch_tokens=settings.max_batch_tokens,
        chunk_rows=settings.forward_chunk_rows, peer=peer, peer_exe=peer_exe, policy=policy, rounds=rounds,
        shapes=shapes, only_shapes=only_shapes, shape_scale=shape_scale, peer_onnx_dir=peer_onnx_dir,
        cache_repeats=tuple(int(x) for x in cache_repeats.split(",") if x.strip()), only_cache=only_cache,
        shape_variants=variants, shape_models=tuple(m for m in shape_models.split(",") if m),
        shape_p8=shape_p8, many_tasks=many_tasks, shipped_prefix_dir=settings.prefix_dir,
    )  # fmt: skip
    if only_cache and not cfg.cache_repeats:
        raise typer.BadParameter("--only-cache needs --cache-repeats (e.g. 0,50,90)")
    result = ServiceBench(cfg).run()
    (out_dir / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_scaling(result, out_dir / "service_scaling.png")
    md = markdown(result)
    (out_dir / "service.md").write_text(md + "\n")
    typer.echo(md)


def soak_cmd(
    settings: Settings,
    duration: Annotated[float, typer.Option(help="Seconds of load and swaps.")] = 60.0,
    concurrency: Annotated[int, typer.Option(help="Concurrent clients.")] = 8,
    swap_every: Annotated[
        float, typer.Option(help="Seconds between swaps (in place, rename, PATCH in turn).")
    ] = 1.0,
    out_dir: Annotated[Path | None, typer.Option(help="Where the server log and soak.json go.")] = None,
) -> None:
    """Hot-swap soak: load + prefix swaps in place and by rename + PATCH toggles, every vector checked
    against its digest's reference; exits 1 on a torn version, a mismatch or a 5xx. --backend is the
    server's."""
    from service.bench.soak import SoakConfig, run_soak

    logging.basicConfig(level=logging.WARNING)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    cfg = SoakConfig(
        duration_s=duration,
        concurrency=concurrency,
        swap_every_s=swap_every,
        model=settings.model,
        backend=settings.backend,
        out_dir=out_dir,
    )
    summary = run_soak(cfg).summary()
    _report(summary, out_dir / "soak.json" if out_dir is not None else None)
    if not summary["ok"]:
        raise typer.Exit(1)


def onnx_cmd(
    settings: Settings,
    texts: Texts = 32,
    prefixes: Prefixes = 8,
    prefix_len: PrefixLen = 16,
    rounds: Annotated[int, typer.Option(help="Interleaved timed rounds (torch, ORT alternate).")] = 7,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads of both backends (default: their own).")
    ] = None,
    out: Out = None,
) -> None:
    """ONNX Runtime vs torch side by side on the same rows (parity and throughput)."""
    from service.bench.onnx import run_onnx_bench

    logging.basicConfig(level=logging.WARNING)
    result = run_onnx_bench(
        settings.model_copy(update={"backend": "onnx"}),
        n_texts=texts,
        n_prefixes=prefixes,
        prefix_len=prefix_len,
        rounds=rounds,
        threads=threads,
    )
    _report(result, out)


def ray_cmd(
    settings: Settings,
    out: Annotated[Path, typer.Option(help="Write the results as JSON here (server logs beside it).")] = Path(
        "bench-results/ray.json"
    ),
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds per configuration (and in-step rounds).")
    ] = 3,
    texts: Annotated[int, typer.Option(help="Texts of the throughput phase.")] = 256,
) -> None:
    """Ray Serve (1 and 2 replicas) against ``serve`` alone, interleaved: start-up, latency at c=1,
    throughput at c=8; then how soon a change is in force on both replicas (target 2 s; ``--rounds``
    rounds). Needs the ``ray`` extra; BENCHMARKS.md, "Ray Serve"."""
    try:
        import ray  # noqa: F401
    except ImportError:
        typer.echo('error: bench ray needs Ray Serve: pip install "prefix-embed[ray]"', err=True)
        raise typer.Exit(2) from None
    from service.bench.ray_serve import run_ray_bench

    logs = out.parent / "ray-logs"
    result = run_ray_bench(settings.model_path(), settings.prefix_dir, logs, rounds=rounds, n_texts=texts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps({"startup_s": result["startup_s"], "summary": result["summary"]}, indent=2))


def frontier_cmd(
    settings: Settings,
    texts: Texts = 64,
    repeats: Annotated[int, typer.Option(help="Interleaved timed rounds.")] = 5,
    out: Annotated[Path, typer.Option(help="Folder of frontier.{json,md,png}.")] = Path("results/frontier"),
) -> None:
    """Accuracy against cost per text of MiniLM and mpnet, plain and with their prefixes (concat):
    layer-rows and texts/s measured here side by side, accuracy from the experiments' ship records."""
    from service.bench.frontier import FRONTIER, markdown, measure, plot

    logging.basicConfig(level=logging.WARNING)
    result = measure(FRONTIER, texts, repeats, settings.backbones_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frontier.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "frontier.md").write_text(markdown(result) + "\n")
    plot(result, out / "frontier.png")
    typer.echo(markdown(result))


def predict_cmd(
    settings: Settings,
    out_dir: Annotated[
        Path, typer.Option(help="Where predict.json, predict.md and the server log go.")
    ] = Path("bench-results"),
    rounds: Annotated[
        int, typer.Option(help="Rounds: one wave (concurrency requests) of each variant.")
    ] = 20,
) -> None:
    """POST /predict with every served head vs POST /embed of the same prefixes: texts/s side by side
    (interleaved rounds), and the heads' own cost in-process (BENCHMARKS.md, Task heads)."""
    from service.bench.predict import PredictBenchConfig, markdown, run_predict_bench

    logging.basicConfig(level=logging.WARNING)
    cfg = PredictBenchConfig(
        settings.prefix_dir, settings.model_path(), out_dir, rounds=rounds,
        # throughput, not deadlines: on a loaded machine a 32-text request can wait past the 30 s default
        env={"PREFIX_EMBED_BACKEND": settings.backend, "PREFIX_EMBED_REQUEST_TIMEOUT_S": "600"},
    )  # fmt: skip
    result = run_predict_bench(cfg)
    (out_dir / "predict.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "predict.md").write_text(markdown(result))
    typer.echo(markdown(result))


bench_app.command("engine")(settings_command(engine_cmd, TORCH_ENGINE, defaults={"forward_chunk_rows": 0}))
bench_app.command("service")(
    settings_command(
        service_cmd,
        (*BACKBONE, "prefix_dir", "device", "dtype", "forward_chunk_rows", "max_batch_tokens"),
        defaults={"device": "cpu"},
    )
)
bench_app.command("soak")(settings_command(soak_cmd, (*BACKBONE, "backend")))
bench_app.command("onnx")(settings_command(onnx_cmd, ONNX_ENGINE))
bench_app.command("ray")(settings_command(ray_cmd, (*BACKBONE, "prefix_dir")))
bench_app.command("predict")(settings_command(predict_cmd, (*BACKBONE, "prefix_dir", "backend")))
bench_app.command("frontier")(settings_command(frontier_cmd, ("backbones_dir",)))
