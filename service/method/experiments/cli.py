"""``python -m service.method.experiments``: bench, run, targets, report, ship, heads, quantization
(see the package doc)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from service.method.experiments.rows import ROWS, SOURCES, Study, study

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)

ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="A known backbone (default: all-MiniLM-L6-v2; e.g. all-mpnet-base-v2)."),
]


def _study(model: str | None) -> Study:
    try:
        return study(model)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


@app.command()
def bench(
    reps: Annotated[int, typer.Option(help="Timed interleaved rounds (after 2 warm-up rounds).")] = 20,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
) -> None:
    """Training cost per step against S (results/trunk/bench_train_step.json)."""
    from service.method.experiments.runs import bench as run_bench

    run_bench(reps, threads)


@app.command()
def run(
    task: Annotated[str, typer.Option(help=f"Source task: {', '.join(SOURCES)}.")],
    rows: Annotated[str, typer.Option(help=f"Comma-separated rows: {', '.join(ROWS)}.")],
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    model: ModelOption = None,
) -> None:
    """Train ``rows`` for ``task`` over one shared trunk cache; record dev, source value and seconds."""
    from service.method.experiments.runs import run as run_rows

    chosen = _split(rows)
    unknown = sorted(set(chosen) - set(ROWS))
    if unknown or task not in SOURCES:
        raise typer.BadParameter(
            f"unknown rows {unknown} or task {task!r}; known {sorted(ROWS)}, {sorted(SOURCES)}"
        )
    run_rows(task, chosen, [int(s) for s in _split(seeds)], threads, _study(model))


@app.command()
def targets(
    rows: Annotated[str, typer.Option(help="Comma-separated rows (default: the rows with transfer).")] = "",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    depth: Annotated[int, typer.Option(help="The depth whose target trunk is built first.")] = 3,
    wait: Annotated[bool, typer.Option(help="Keep polling for new prefix files until --minutes.")] = False,
    minutes: Annotated[float, typer.Option(help="How long to keep going.")] = 60,
    seeds: Annotated[
        str, typer.Option(help="Comma-separated seeds whose files get vectors (default: all).")
    ] = "",
    model: ModelOption = None,
) -> None:
    """The three targets' vectors under base and under each prefix of the rows (1,500/750 texts each)."""
    from service.method.experiments.targets import target_vectors

    chosen = [int(s) for s in _split(seeds)] or None
    target_vectors(
        threads, time.time() + 60 * minutes, _study(model), _split(rows) or None, wait, depth, chosen
    )


@app.command()
def report(model: ModelOption = None) -> None:
    """Depth and recipe tables (results/trunk/report.{json,md}; another backbone NAME: results/trunk/NAME/)."""
    from service.method.experiments.report import report as write_report

    write_report(_study(model))


@app.command()
def ship(
    row: Annotated[str, typer.Option(help="The row whose prefixes are shipped.")],
    tasks: Annotated[str, typer.Option(help="Comma-separated source tasks.")] = ",".join(SOURCES),
    seed: int = 0,
    model: ModelOption = None,
    require_gain: Annotated[
        bool,
        typer.Option(
            help="Ship only prefixes that beat base on their own test split (a choice made on test)."
        ),
    ] = True,
    float_only: Annotated[
        bool, typer.Option(help="Measure only the served concat's float vectors against base.")
    ] = False,
) -> None:
    """Copy a row's prefixes into the backbone's prefix folder and measure the shipped set's transfer
    (results/trunk/shipped.{json,md}; another backbone NAME: results/trunk/NAME/)."""
    from service.method.experiments.report import ship as ship_row

    ship_row(row, _split(tasks), seed, _study(model), require_gain, float_only)


@app.command()
def quantization(
    prefix_dir: Annotated[
        Path | None,
        typer.Option(help="The folder whose default served model is measured (default: the backbone's own)."),
    ] = None,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    model: ModelOption = None,
) -> None:
    """Every encoding of the served default concat on the three targets, calibrated and not
    (results/quantization.{json,md}; another backbone NAME: results/quantization/NAME.{json,md})."""
    from service.method.experiments.quantization import quantization as measure

    measure(_study(model), prefix_dir, threads)


@app.command()
def heads(
    tasks: Annotated[str, typer.Option(help="Comma-separated prefixes (default: every shipped one).")] = "",
    prefix_dir: Annotated[
        Path | None,
        typer.Option(help="The prefix folder; heads go to its heads/ (default: the backbone's own)."),
    ] = None,
    cache: Annotated[Path, typer.Option(help="Where the vectors are cached.")] = Path(".cache/heads"),
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    model: ModelOption = None,
) -> None:
    """Fit each shipped prefix's task head as its source value probe is fitted, on the served vectors
    (PREFIX_DIR/heads/TASK.safetensors; results/heads/shipped.{json,md}, another backbone NAME's under
    results/heads/NAME/)."""
    from service.method.experiments.heads import fit_heads

    chosen = _study(model)
    fit_heads(prefix_dir or chosen.ship_dir, _split(tasks), cache, threads, chosen.model)


@app.command("fit-rules")
def fit_rules(
    prefix_dir: Annotated[
        Path | None, typer.Option(help="The source prefixes (default: the backbone's own folder).")
    ] = None,
    rules: Annotated[
        str, typer.Option(help="Comma-separated: base, all, greedy, weighted, stacked, similarity.")
    ] = ("base,all,greedy,weighted,stacked,similarity"),
    draws: Annotated[
        int, typer.Option(help="Dev draws (1,000 fit / 500 dev of the 1,500) beside the test row.")
    ] = 3,
    quick_steps: Annotated[int, typer.Option(help="Steps of similarity's early-checkpoint prefix.")] = 50,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
    prefixes: Annotated[
        str | None,
        typer.Option(help="Comma-separated source prefixes (default: every prefix of the folder)."),
    ] = None,
    model: ModelOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write rules.{json,md} here (default: results/fit, or results/fit/NAME)."),
    ] = None,
) -> None:
    """The input rules of ``fit --select`` on the three targets (results/fit/rules.{json,md}; another
    backbone NAME's under results/fit/NAME/; another source set's under --out)."""
    from service.method.experiments.fit_rules import report_rules, run_rules

    chosen = _study(model)
    only = _split(prefixes) if prefixes else None
    run_rules(prefix_dir or chosen.ship_dir, _split(rules), draws, quick_steps, threads, only, chosen, out)
    report_rules(chosen, out)
