"""CLI commands of the method: ``train``, ``evaluate``, ``similarity`` (registered in service/cli.py).

Heavy imports happen inside the commands so that ``python -m service --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from service.engine.backbone import BackboneSpec
    from service.method.data import TaskData
    from service.method.train import TaskSplit

DataOpt = Annotated[
    list[str],
    typer.Option(
        "--data",
        help="A built-in data set (see docs/DATA.md: trec, sms-spam, vader-reviews, bbc-news, cola, ...) "
        "or a .jsonl/.csv file with text, optional text_pair, label. Repeat for a multi-task prefix.",
    ),
]


def train_cmd(
    data: DataOpt,
    out: Annotated[Path, typer.Option(help="Native prefix file to write (NAME.safetensors).")],
    name: Annotated[
        str | None, typer.Option(help="Task name in the metadata (default: the data set's).")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Backbone folder (default: all-MiniLM-L6-v2).")] = None,
    data_path: Annotated[Path | None, typer.Option(help="Where a built-in data set's package lies.")] = None,
    holdout: Annotated[
        float, typer.Option(help="Keep this test fraction out (for target tasks of evaluate).")
    ] = 0.0,
    max_examples: Annotated[
        int | None, typer.Option(help="Subsample to this many examples (train + dev).")
    ] = 2000,
    dev_fraction: Annotated[float, typer.Option(help="Dev split (by document) for early stopping.")] = 0.15,
    prefix_len: Annotated[int, typer.Option(help="Virtual tokens per layer.")] = 16,
    max_length: Annotated[int, typer.Option(help="Max tokens per text.")] = 128,
    batch_size: int = 16,
    lr: Annotated[float, typer.Option(help="Learning rate of the prefix.")] = 1e-2,
    head_lr: Annotated[float, typer.Option(help="Learning rate of the classification head.")] = 2e-3,
    max_steps: int = 300,
    eval_every: int = 25,
    patience: int = 4,
    seed: int = 0,
    init_std: float = 0.5,
    head_init: Annotated[str, typer.Option(help="probe (fit the head first, LP-FT) | random")] = "probe",
    projection: Annotated[bool, typer.Option(help="PEFT prefix_projection (MLP reparametrization).")] = False,
    checkpoint_step: Annotated[
        list[int] | None,
        typer.Option("--checkpoint-step", help="Also save the prefix after this step (repeat)."),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for checkpoint prefixes NAME.stepN.safetensors (not a served folder)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's choice).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    first_layer: Annotated[
        int | None,
        typer.Option(
            help="Train a shared-trunk prefix in layers S..L-1 only (native K/V, position_convention none; "
            "layers below S run once per text, without gradients). Without it: PEFT, all layers."
        ),
    ] = None,
    init: Annotated[
        str, typer.Option(help="With --first-layer: normal (N(0, init_std^2)) | tokens (real tokens' K/V).")
    ] = "normal",
    preserve: Annotated[
        float, typer.Option(help="With --first-layer: weight of the 1 - cos(prefixed, base) term.")
    ] = 0.0,
    schedule: Annotated[
        str, typer.Option(help="With --first-layer: constant | cosine (10% warm-up).")
    ] = "constant",
) -> None:
    """Train ONE prefix (PEFT PrefixTuning on the frozen backbone, or with --first-layer a native
    shared-trunk prefix) and write it as a native prefix file."""
    from service.config import default_model_path
    from service.method.corpora import BUILTIN, load_builtin
    from service.method.data import holdout as carve
    from service.method.data import load_table, split, subsample
    from service.method.prefix_io import write_native
    from service.method.train import TaskSplit, TrainConfig, train_prefix

    logging.basicConfig(level=logging.WARNING)
    if checkpoint_step and checkpoint_dir is None:
        raise typer.BadParameter("--checkpoint-step needs --checkpoint-dir")
    splits = []
    for item in data:
        task = load_builtin(item, data_path) if item in BUILTIN else load_table(Path(item))
        if holdout:
            task, _ = carve(task, holdout)
            task.provenance["holdout"] = f"test fraction {holdout} kept out (seed {1234}, by document)"
        task = subsample(task, max_examples, seed)
        train, dev = split(task, dev_fraction, seed)
        splits.append(TaskSplit(train, dev))
    if name and len(splits) == 1:
        splits = [TaskSplit(*(_renamed(s, name) for s in (splits[0].train, splits[0].dev)))]
    if first_layer is not None:
        _train_trunk(
            splits, out, model, first_layer=first_layer, prefix_len=prefix_len, max_length=max_length,
            batch_size=batch_size, lr=lr, head_lr=head_lr, max_steps=max_steps, eval_every=eval_every,
            patience=patience, seed=seed, init=init, init_std=init_std, projection=projection,
            preserve=preserve, schedule=schedule, threads=threads, progress=progress,
        )  # fmt: skip
        return
    if init != "normal" or preserve or schedule != "constant":
        raise typer.BadParameter("--init tokens, --preserve and --schedule need --first-layer")
    cfg = TrainConfig(
        prefix_len=prefix_len, max_length=max_length, batch_size=batch_size, lr=lr, head_lr=head_lr,
        max_steps=max_steps, eval_every=eval_every, patience=patience, seed=seed, init_std=init_std,
        head_init=head_init, projection=projection, checkpoint_steps=tuple(checkpoint_step or ()), threads=threads,
    )  # fmt: skip
    model_path = model or default_model_path()
    result = train_prefix(model_path, splits, cfg, progress=progress)
    spec = result.model.spec
    write_native(out, result.key, result.value, result.metadata, spec)
    for step, (k, v) in sorted(result.checkpoints.items()):
        meta = result.metadata | {"checkpoint_step": step, "dev_metrics": "n/a (checkpoint)"}
        stem = out.name.removesuffix(".safetensors")
        write_native(checkpoint_dir / f"{stem}.step{step}.safetensors", k, v, meta, spec)  # type: ignore[operator]
    summary = {
        "out": str(out),
        "task": result.metadata["task"],
        "dev_metrics": result.metadata["dev_metrics"],
        "steps": result.metadata["training"]["steps_run"],
        "best_step": result.metadata["training"]["best_step"],
        "seconds": result.metadata["training"]["seconds"],
        "checkpoints": sorted(result.checkpoints),
    }
    typer.echo(json.dumps(summary, indent=2))


def _train_trunk(
    splits: list[TaskSplit], out: Path, model: Path | None, *, threads: int | None, progress: bool, **cfg: Any
) -> None:
    import torch

    from service.config import default_model_path
    from service.engine.backbone import load_backbone
    from service.method.prefix_io import write_native
    from service.method.trunk_train import TrunkTrainConfig, train_trunk_prefix

    if len(splits) != 1:
        raise typer.BadParameter("--first-layer trains a single-task prefix (one --data)")
    if threads:
        torch.set_num_threads(threads)
    try:
        config = TrunkTrainConfig(**cfg)
        backbone = load_backbone(model or default_model_path(), device="cpu", dtype="float32")
        if not 0 <= config.first_layer < backbone.spec.num_layers:
            raise ValueError(f"--first-layer {config.first_layer} outside 0..{backbone.spec.num_layers - 1}")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    log = (lambda m: typer.echo(m, err=True)) if progress else None
    result = train_trunk_prefix(backbone, splits[0].train, splits[0].dev, config, log=log)
    write_native(out, result.key, result.value, result.metadata, backbone.spec)
    training = result.metadata["training"]
    summary = {
        "out": str(out), "task": result.metadata["task"], "first_layer": config.first_layer,
        "recipe": result.metadata["recipe"], "dev_metrics": result.metadata["dev_metrics"],
        "steps": training["steps_run"], "best_step": training["best_step"], "seconds": training["seconds"],
        "seconds_per_step": training["seconds_per_step"],
    }  # fmt: skip
    typer.echo(json.dumps(summary, indent=2))


def _renamed(data: TaskData, name: str) -> TaskData:
    from dataclasses import replace

    return replace(data, name=name)


def _load_task(item: str, data_path: Path | None = None) -> TaskData:
    from service.method.corpora import BUILTIN, load_builtin
    from service.method.data import load_table

    return load_builtin(item, data_path) if item in BUILTIN else load_table(Path(item))


def _spec(model: Path | None) -> BackboneSpec:
    from transformers import AutoConfig

    from service.config import default_model_path
    from service.engine.backbone import spec_from_config, weights_digest

    path = model or default_model_path()
    return spec_from_config(AutoConfig.from_pretrained(path, local_files_only=True), weights_digest(path))


def evaluate_cmd(
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
    model: Annotated[Path | None, typer.Option(help="Backbone folder (default: all-MiniLM-L6-v2).")] = None,
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

    from service.config import default_model_path
    from service.engine.backbone import load_backbone
    from service.engine.torch_encoder import TorchEncoder
    from service.method.evaluate import evaluate, make_target, markdown_table, plot
    from service.method.prefix_io import load_prefixes

    logging.basicConfig(level=logging.WARNING)
    if threads:
        torch.set_num_threads(threads)
    backbone = load_backbone(model or default_model_path(), device="cpu", dtype="float32")
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
    prefix: Annotated[
        list[Path] | None,
        typer.Option("--prefix", help="Prefix file or folder (repeat; default: prefixes/)."),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Rank the other prefixes for this one.")] = None,
    measure: Annotated[str, typer.Option(help="mean (position-averaged) | flat")] = "mean",
    relative: Annotated[bool, typer.Option(help="Use the change from the recorded initial prefix.")] = True,
    model: Annotated[Path | None, typer.Option(help="Backbone folder (default: all-MiniLM-L6-v2).")] = None,
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
    from service.method.prefix_io import load_prefixes
    from service.method.similarity import heatmap
    from service.method.transfer import transfer_markdown, transfer_report
    from service.registry.similarity import similarity_document, similarity_matrix

    prefixes = sorted(load_prefixes(prefix or [Path("prefixes")], _spec(model)), key=lambda p: p.name)
    doc = similarity_document(prefixes, target, measure, relative)
    if heatmap_png:
        names = [p.name for p in prefixes]
        heatmap(
            names, similarity_matrix(prefixes, measure, relative), heatmap_png, f"task similarity ({measure})"
        )
    typer.echo(json.dumps(doc, indent=2))
    if evaluation is not None:
        spec = _spec(model)
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
