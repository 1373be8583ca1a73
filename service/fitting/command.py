"""``python -m service fit --data FILE --name TASK --prefix-dir DIR``: a head from labelled examples,
written to ``DIR/heads/TASK.safetensors`` (atomically, by the one writer), without a server.

The same path as ``POST /heads/{name}/fit`` (:func:`service.fitting.run.fit_head`): the examples
through the pipeline (``run_pipeline``, as ``embed`` and ``predict``), the choice of inputs and the
probe; so both write the same bytes from the same examples and seed. A progress bar goes to stderr,
the table of what was tried to stdout (``--json``: the summary document instead).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.config import Settings
from service.fitting.task import SELECT_CHOICES

if TYPE_CHECKING:
    from tqdm import tqdm


class _Bar:
    """One tqdm bar per stage of the fit (embed, sources, greedy, weighted, ...)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None
        self.stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit="text" if stage == "embed" else "cv", leave=False)
        self.bar.total = max(total, done)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def table_lines(result: dict[str, Any]) -> list[str]:
    """The short table of what the fit tried, and what it chose."""
    lines = [f"{'rule':<9} {'cv acc':>7}  inputs / note"]
    for row in result["table"]:
        inputs = row["inputs"] if isinstance(row["inputs"], str) else "+".join(row["inputs"])
        note = f"  ({row['note']})" if row["note"] else ""
        lines.append(f"{row['rule']:<9} {row['cv_accuracy']:>7.4f}  {inputs}{note}")
    weights = result["weights"]
    kept = ", ".join(f"{n} x{w:.2f}" for n, w in weights.items()) if weights else "+".join(result["inputs"])
    lines.append(
        f"chosen ({result['select']} -> {result['rule']}): {kept}; CV {result['cv_accuracy']:.4f} against "
        f"base {result['cv_accuracy_base']:.4f} and all {result['cv_accuracy_all']:.4f}"
    )
    return lines


def fit_cmd(
    settings: Settings,
    data: Annotated[Path, typer.Option(help="A .jsonl or .csv file with text and label (train's reader).")],
    name: Annotated[str, typer.Option(help="The head's name: DIR/heads/NAME.safetensors.")],
    select: Annotated[
        str,
        typer.Option(
            help=f"Which inputs the head reads: {' | '.join(SELECT_CHOICES)} | NAME,NAME (base and enabled "
            "prefixes). auto: the rule that measured best on the target tasks (RESULTS.md)."
        ),
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the CV folds and the probe.")] = 0,
    description: Annotated[str | None, typer.Option(help="What the head predicts (metadata).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary document, not the table.")
    ] = False,
) -> None:
    """Fit a task head from labelled examples: inputs chosen from base and the enabled prefixes by CV,
    standardized logistic regression, written atomically to the prefix folder's heads/."""
    from service.errors import PrefixEmbedError
    from service.fitting.run import fit_head
    from service.fitting.task import FitLimits, FitTask, check_examples, check_head_name
    from service.heads.writer import write_head
    from service.method.data import load_table
    from service.oneshot import run_pipeline
    from service.pipeline import EmbeddingPipeline

    logging.basicConfig(level=logging.WARNING)
    limits = FitLimits.from_settings(settings)
    bar = _Bar(progress)
    try:
        check_head_name(name)
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    try:
        table = load_table(data)
    except (OSError, ValueError, KeyError) as exc:
        typer.echo(f"error: {data}: {exc}", err=True)
        raise typer.Exit(2) from None

    async def work(pipeline: EmbeddingPipeline) -> dict[str, Any]:
        examples = check_examples(table.texts, table.labels, limits)
        task = FitTask(name, examples, select, seed, description)
        outcome = await fit_head(
            pipeline,
            task,
            limits=limits,
            chunk_texts=settings.fit_chunk_texts,
            timeout_s=settings.fit_timeout_s,
            model=settings.model_path(),
            progress=bar,
        )
        head = write_head(settings.prefix_dir, name, outcome.params, pipeline.batcher.encoder.spec)
        return outcome.result() | {
            "head": {"name": head.name, "digest": head.digest, "path": str(head.source)}
        }

    try:
        result = run_pipeline(
            settings, work, on_rejected=lambda r: typer.echo(f"rejected {r.reason}", err=True)
        )
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    finally:
        bar.close()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    for line in table_lines(result):
        typer.echo(line)
    typer.echo(
        f"wrote {settings.prefix_dir / 'heads' / f'{name}.safetensors'} ({result['head']['digest'][:12]})"
    )
