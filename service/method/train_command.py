"""``python -m service train``: one prefix, by default with the recipe of the shipped prefixes.

``--recipe shipped`` (the default; service/method/recipe.py) or ``peft``; ``--like FILE`` trains again
what a prefix file records (recipe, data set, task name, data protocol). Every recipe flag left out
keeps the recipe's value. ``--model`` is the ``serve`` flag (generated from Settings). Heavy imports
happen inside the command (``--help`` stays fast).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from service.config import Settings

if TYPE_CHECKING:
    from service.method.recipe import Recorded, TrainConfig
    from service.method.train import TaskSplit

RecipeName = Literal["shipped", "peft"]
Init = Literal["normal", "tokens"]
Schedule = Literal["constant", "cosine"]
HeadInit = Literal["probe", "random"]
ALL_LAYERS_WARNING = (
    "warning: this prefix acts in every layer ({why}): any call that includes it runs all L layers per "
    "prefix instead of sharing the trunk with base and the shipped prefixes (first_layer 3), so every "
    "text in such a call costs more layer-rows. Use the default recipe (--first-layer 3) unless you "
    "need this."
)


def _opt(help: str, flag: str | None = None) -> Any:
    return typer.Option(*([flag] if flag else []), help=help + " (default: the recipe's)")


def train_cmd(
    settings: Settings,
    out: Annotated[Path, typer.Option(help="Native prefix file to write (NAME.safetensors).")],
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            help="A built-in data set (docs/DATA.md: trec, sms-spam, vader-reviews, bbc-news, ...) or a "
            ".jsonl/.csv file with text, optional text_pair, label. Repeat for a multi-task prefix. "
            "With --like: default the file's data set.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Task name in the metadata (default: the data set's).")
    ] = None,
    recipe: Annotated[
        RecipeName | None,
        typer.Option(
            help="shipped (default: the recipe of prefixes/*.safetensors) | peft (all layers, PEFT)."
        ),
    ] = None,
    like: Annotated[
        Path | None,
        typer.Option(
            help="Train again as this prefix file records: its recipe, data set, task and data protocol."
        ),
    ] = None,
    data_path: Annotated[Path | None, typer.Option(help="Where a built-in data set's package lies.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads (default: torch's; --like: the file's).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar and the dev checks.")] = True,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for checkpoint prefixes NAME.stepN.safetensors (not a served folder)."),
    ] = None,
    first_layer: Annotated[
        int | None, _opt("S: the prefix acts in layers S..L-1 over a shared trunk.")
    ] = None,
    prefix_len: Annotated[int | None, _opt("Virtual tokens per layer.")] = None,
    max_length: Annotated[int | None, _opt("Max tokens per text.")] = None,
    batch_size: Annotated[int | None, _opt("Examples per step.")] = None,
    lr: Annotated[float | None, _opt("Learning rate of the prefix.")] = None,
    head_lr: Annotated[float | None, _opt("Learning rate of the classification head.")] = None,
    weight_decay: Annotated[float | None, _opt("AdamW weight decay.")] = None,
    max_steps: Annotated[int | None, _opt("Training steps at most.")] = None,
    eval_every: Annotated[int | None, _opt("Steps between dev checks (the best one is kept).")] = None,
    patience: Annotated[int | None, _opt("Dev checks without improvement before stopping.")] = None,
    seed: Annotated[int | None, _opt("Subsample, split, initial prefix and batches.")] = None,
    init: Annotated[
        Init | None, _opt("normal (N(0, init_std^2)) | tokens (real tokens' K/V; native only).")
    ] = None,
    init_std: Annotated[float | None, _opt("Standard deviation of the normal start.")] = None,
    head_init: Annotated[HeadInit | None, _opt("probe (fit the head first, LP-FT) | random.")] = None,
    projection: Annotated[
        bool | None, _opt("Train through an MLP reparameterization.", "--projection/--no-projection")
    ] = None,
    projection_hidden: Annotated[int | None, _opt("Hidden size of the projection MLP.")] = None,
    preserve: Annotated[float | None, _opt("Weight of the 1 - cos(prefixed, base) term.")] = None,
    schedule: Annotated[Schedule | None, _opt("constant | cosine (10% warm-up).")] = None,
    checkpoint_step: Annotated[
        list[int] | None, _opt("Also save the prefix after this step (repeat).", "--checkpoint-step")
    ] = None,
    max_examples: Annotated[int | None, _opt("Train + dev examples at most, after the holdout.")] = None,
    dev_fraction: Annotated[float | None, _opt("Dev split (by document) for the checks.")] = None,
    holdout: Annotated[
        float | None, _opt("Test fraction kept out first (source value measured on it); 0: none.")
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Calibrate the written file over the calibration corpus (the int8/uint8/binary/ubinary "
            "statistics; python -m service calibrate does it later)."
        ),
    ] = True,
) -> None:
    """Train ONE prefix and write it as a native prefix file (by default the shipped prefixes' recipe:
    a shared-trunk prefix from layer 3; see --recipe and --like)."""
    given = {k: v for k, v in locals().items() if v is not None and k in _config_fields()}
    from dataclasses import replace

    from service.method.calibration_hook import calibrate_written
    from service.method.head_fit import write_trained_head
    from service.method.prefix_io import write_native
    from service.method.recipe import RECIPES
    from service.method.source_value import source_value
    from service.method.train import train_prefix

    if checkpoint_step is not None:
        given["checkpoint_steps"] = tuple(given.pop("checkpoint_step"))
    model = settings.model_path()
    base, items, digest = RECIPES[recipe or "shipped"], data, None
    if like is not None:
        if recipe is not None:
            raise typer.BadParameter("--like and --recipe both choose the recipe: give one")
        recorded = _recorded(like, model)
        base, name, digest = recorded.config, name or recorded.task, recorded.train_digest
        threads = threads or recorded.threads
        items = items or ([recorded.data] if recorded.data else None)
    if not items:
        raise typer.BadParameter("--data is required" + (f" ({like} was trained on a file)" if like else ""))
    try:
        cfg = replace(base, **given)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if cfg.checkpoint_steps and checkpoint_dir is None:
        raise typer.BadParameter("--checkpoint-step needs --checkpoint-dir")
    if cfg.first_layer in (None, 0):
        why = "PEFT positions, first_layer 0" if cfg.peft else "first_layer 0"
        typer.echo(ALL_LAYERS_WARNING.format(why=why), err=True)
    splits, tests = _splits(items, cfg, name, data_path)
    if digest is not None and splits[0].train.digest() != digest:
        typer.echo(f"warning: the training examples differ from {like}'s (digest {splits[0].train.digest()} "
                   f"vs {digest}): this run does not reproduce it", err=True)  # fmt: skip
    try:
        result = train_prefix(model, splits, cfg, progress=progress, threads=threads)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if result.stopped and result.metadata["training"]["best_step"] == 0:
        typer.echo(
            f"stopped: {result.stopped}; the file holds the untrained prefix (base may serve as well)",
            err=True,
        )
    if len(splits) == 1 and tests[0] is not None:
        result.metadata["source_value"] = source_value(result, splits[0].train, tests[0])
    prefix = write_native(out, result.key, result.value, result.metadata, result.learner.spec)
    if calibrate:  # before the heads: they pin the calibrated file's digest
        try:
            prefix = calibrate_written(out, settings)
        except FileNotFoundError as exc:  # a serve install has no data packages: the corpus is theirs
            typer.echo(f"warning: {out.name} not calibrated ({exc}); it serves with the uncalibrated "
                       "int8/binary fallback until `python -m service calibrate` runs", err=True)  # fmt: skip
        else:
            cal = prefix.calibration
            typer.echo(f"calibrated {out.name} over {cal.corpus['name'] if cal else '?'}", err=True)
    heads = [write_trained_head(prefix, out.parent, result, s, t) for s, t in zip(splits, tests, strict=True)]
    for step, (k, v) in sorted(result.checkpoints.items()):
        meta = result.metadata | {"checkpoint_step": step, "dev_metrics": "n/a (checkpoint)"}
        stem = out.name.removesuffix(".safetensors")
        write_native(checkpoint_dir / f"{stem}.step{step}.safetensors", k, v, meta, result.learner.spec)  # type: ignore[operator]
    summary = _summary(out, result.metadata, result.checkpoints)
    # the heads it trained (one per task), beside the prefix: served by POST /predict
    summary["heads"] = [{"file": str(out.parent / h.source), "metrics": h.metadata["metrics"]} for h in heads]
    typer.echo(json.dumps(summary, indent=2))


def _config_fields() -> set[str]:
    from dataclasses import fields

    from service.method.recipe import TrainConfig

    return {f.name for f in fields(TrainConfig)} | {"checkpoint_step"}


def _recorded(path: Path, model: Path) -> Recorded:
    from service.errors import PrefixEmbedError
    from service.method.prefix_io import load_prefixes, model_spec
    from service.method.recipe import like

    try:
        (prefix,) = load_prefixes([path], model_spec(model))
        return like(prefix.metadata)
    except (OSError, ValueError, KeyError, PrefixEmbedError) as exc:
        raise typer.BadParameter(f"--like {path}: {exc}") from None


def _splits(
    items: list[str], cfg: TrainConfig, name: str | None, data_path: Path | None
) -> tuple[list[TaskSplit], list[Any]]:
    from dataclasses import replace

    from service.method.corpora import BUILTIN, load_builtin
    from service.method.data import load_table, protocol_splits
    from service.method.train import TaskSplit

    splits, tests = [], []
    for item in items:
        task = load_builtin(item, data_path) if item in BUILTIN else load_table(Path(item))
        if name and len(items) == 1:
            task = replace(task, name=name)
        train, dev, test = protocol_splits(
            task, holdout_fraction=cfg.holdout, max_examples=cfg.max_examples, dev_fraction=cfg.dev_fraction,
            seed=cfg.seed,
        )  # fmt: skip
        splits.append(TaskSplit(train, dev))
        tests.append(test)
    return splits, tests


def _summary(out: Path, meta: dict[str, Any], checkpoints: dict[int, Any]) -> dict[str, Any]:
    training = meta["training"]
    return {
        "out": str(out), "task": meta["task"], "first_layer": training["first_layer"], "recipe": meta["recipe"],
        "dev_metrics": meta["dev_metrics"], "steps": training["steps_run"], "best_step": training["best_step"],
        "stopped": training["stopped"], "seconds": training["seconds"],
        "seconds_per_step": training["seconds_per_step"], "source_value": meta.get("source_value"),
        "checkpoints": sorted(checkpoints),
    }  # fmt: skip
