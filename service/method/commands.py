"""CLI commands of the method: ``train`` (service/method/train_command.py), ``evaluate``, ``similarity``
(registered in service/cli.py).

``--model`` is the ``serve`` flag (generated from Settings by service/settings_cli.py, with its
``PREFIX_EMBED_MODEL`` variable). Heavy imports happen inside the commands so that
``python -m service --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from service.config import Settings
from service.method.train_command import train_cmd

if TYPE_CHECKING:
    from service.method.data import TaskData

__all__ = ["evaluate_cmd", "similarity_cmd", "train_cmd"]


def _load_task(item: str, data_path: Path | None = None) -> TaskData:
    from service.method.corpora import BUILTIN, load_builtin
    from service.method.data import load_table

    return load_builtin(item, data_path) if item in BUILTIN else load_table(Path(item))


def evaluate_cmd(
    settings: Settings,
    target: Annotated[
        list[str], typer.Option("--target", help="Target task: built-in data set or file (repeat).")
    ],
    prefix: Annotated[
        list[Path] | None,
        typer.Option("--prefix", help="Source prefix file or folder (repeat; default: prefixes/)."),
    ] = None,
    baseline: Annotated[
        list[Path] | None,
        typer.Option("--baseline", help="Prefix evaluated alone, left out of the concat (repeat)."),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option(help="Writes evaluation.md, evaluation.json, evaluation.png here.")
    ] = Path("results"),
    n_train: Annotated[int, typer.Option(help="Probe training examples per target.")] = 1500,
    n_test: Annotated[int, typer.Option(help="Held-out test examples per target.")] = 750,
    test_fraction: Annotated[float, typer.Option(help="Test split carved first, by document.")] = 0.3,
    max_length: int = 128,
    c: Annotated[list[float] | None, typer.Option("--c", help="Probe C grid (3-fold CV; repeat).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache of encoded vectors.")] = Path(
        ".cache/vectors"
    ),
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    progress: bool = True,
) -> None:
    """Probe fixed representations (plain, each prefix, concat, leave-one-out, binary, int8) on target tasks."""
    import torch

    from service.engine.backbone import load_backbone
    from service.engine.torch_encoder import TorchEncoder
    from service.method.evaluate import evaluate, make_target, markdown_table, plot
    from service.method.prefix_io import load_prefixes

    logging.basicConfig(level=logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    backbone = load_backbone(settings.model_path(), device="cpu", dtype="float32")
    encoder = TorchEncoder(backbone, pooling="mean")
    sources = load_prefixes(prefix or [Path("prefixes")], backbone.spec)
    baselines = load_prefixes(baseline or [], backbone.spec)
    targets = [
        make_target(_load_task(t), test_fraction=test_fraction, n_train=n_train, n_test=n_test)
        for t in target
    ]
    result = evaluate(
        encoder, targets, sources, baselines, max_length=max_length, cache_dir=cache_dir,
        cs=tuple(c or (0.01, 0.1, 1.0)), progress=progress,
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(result)
    (out_dir / "evaluation.md").write_text(table)
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "evaluation.png")
    typer.echo(table)


def similarity_cmd(
    settings: Settings,
    prefix: Annotated[
        list[Path] | None,
        typer.Option("--prefix", help="Prefix file or folder (repeat; default: prefixes/)."),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Rank the other prefixes for this one.")] = None,
    measure: Annotated[
        Literal["mean", "flat"], typer.Option(help="mean (position-averaged) | flat")
    ] = "mean",
    relative: Annotated[bool, typer.Option(help="Use the change from the recorded initial prefix.")] = True,
    heatmap_png: Annotated[Path | None, typer.Option("--heatmap", help="Write a heatmap PNG here.")] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(
            help="An evaluate result (evaluation.json): report whether similarity predicts transfer."
        ),
    ] = None,
    target_prefix: Annotated[
        list[Path] | None,
        typer.Option("--target-prefix", help="Prefix trained on a target task (file or folder)."),
    ] = None,
    checkpoints: Annotated[
        Path | None, typer.Option(help="Folder of early-checkpoint prefixes (sources and targets).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the transfer report (markdown) here.")] = None,
) -> None:
    """Task similarity of prefixes from their parameters (JSON: the matrix, or a ranking for --target)."""
    from service.method.prefix_io import load_prefixes, model_spec
    from service.method.similarity import heatmap
    from service.method.transfer import transfer_markdown, transfer_report
    from service.registry.similarity import similarity_document, similarity_matrix

    prefixes = sorted(
        load_prefixes(prefix or [Path("prefixes")], model_spec(settings.model_path())), key=lambda p: p.name
    )
    doc = similarity_document(prefixes, target, measure, relative)
    if heatmap_png:
        names = [p.name for p in prefixes]
        heatmap(
            names, similarity_matrix(prefixes, measure, relative), heatmap_png, f"task similarity ({measure})"
        )
    typer.echo(json.dumps(doc, indent=2))
    if evaluation is not None:
        spec = model_spec(settings.model_path())
        result = json.loads(evaluation.read_text())
        sources = [p for p in prefixes if p.name in result["sources"]]
        targets = load_prefixes(target_prefix or [], spec)
        variants = {"final": (sources, targets)}
        ckpts = load_prefixes([checkpoints], spec) if checkpoints else []
        for step in sorted({int(p.metadata.get("checkpoint_step", 0)) for p in ckpts}):
            at = [p for p in ckpts if int(p.metadata.get("checkpoint_step", 0)) == step]
            variants[f"step{step}"] = (at, at)
            variants[f"final sources, step{step} target"] = (sources, at)
        rep = transfer_report(result, variants, measure)
        text = transfer_markdown(rep)
        if report:
            report.write_text(text)
            report.with_suffix(".json").write_text(json.dumps(rep, indent=2) + "\n")
        typer.echo(text)
