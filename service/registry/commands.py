"""``python -m service models pin|show``: write and inspect the served models of a prefix folder
(``models.json``, see :mod:`service.registry.served`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from service.config import Settings
from service.settings_cli import PREFIX_FOLDER, settings_command

if TYPE_CHECKING:
    from service.engine.backbone import BackboneSpec
    from service.registry.registry import Snapshot

models_app = typer.Typer(
    no_args_is_help=True,
    help="Served models: named, fixed prefix sets (models.json in the prefix folder).",
)


def _snapshot(settings: Settings) -> tuple[Snapshot, BackboneSpec]:
    """The folder as ``serve`` would load it (torch is imported only when a command runs)."""
    from service.engine.backbone import load_backbone
    from service.registry.registry import PrefixRegistry

    spec = load_backbone(settings.model_path(), device="cpu", dtype="float32").spec
    registry = PrefixRegistry(settings.prefix_dir, spec, settings.prefix_limits())
    snap = registry.scan()
    for rejected in snap.rejected:
        typer.echo(f"rejected {rejected.reason}", err=True)
    return snap, spec


def pin(
    settings: Settings,
    name: Annotated[
        str | None, typer.Option(help="The model's name (default: the served model name).")
    ] = None,
    prefix: Annotated[
        list[str] | None,
        typer.Option("--prefix", help="A member, in order (repeat; default: base + every enabled prefix)."),
    ] = None,
    description: Annotated[str, typer.Option(help="What the model is for.")] = "",
) -> None:
    """Pin a served model to prefixes at their current digests, in models.json (written atomically;
    other models kept; the first model pinned becomes the default)."""
    from service.errors import PrefixEmbedError
    from service.registry.served import MODELS_FILE, pinned_document, read_served_models
    from service.registry.writer import atomic_write

    snap, spec = _snapshot(settings)
    names = prefix or snap.enabled_names()
    model = name or settings.model_name()
    try:
        snap.bank.indices(names)
    except PrefixEmbedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    existing = read_served_models(settings.prefix_dir)
    if existing.error is not None:
        typer.echo(f"error: {existing.error}; fix or remove it first", err=True)
        raise typer.Exit(2)
    doc = pinned_document(snap.bank, names, model, existing=existing, description=description)
    atomic_write(settings.prefix_dir / MODELS_FILE, (json.dumps(doc, indent=2) + "\n").encode())
    typer.echo(f"pinned {model!r}: {', '.join(names)} (dim {spec.hidden_size * len(names)}) in {MODELS_FILE}")


def show(settings: Settings) -> None:
    """Every served model of the folder: members, dimension, and whether it can be served now."""
    from service.registry.served import unavailable_reason

    snap, spec = _snapshot(settings)
    served = snap.served
    if served.error is not None:
        typer.echo(f"models.json cannot be used: {served.error}")
        raise typer.Exit(1)
    if not served.models:
        typer.echo("no models.json: the default model is `base` alone (python -m service models pin)")
        return
    for model in served.models.values():
        reason = unavailable_reason(model, snap.bank, snap.enabled, spec.hidden_size)
        default = " (default)" if model.name == served.default else ""
        typer.echo(
            f"{model.name}{default}: dim {spec.hidden_size * len(model.members)}, {reason or 'available'}"
        )
        for member in model.members:
            typer.echo(f"  {member.name:<28} {member.digest or 'any version'}")


models_app.command("pin")(settings_command(pin, ("model", "served_model_name", *PREFIX_FOLDER)))
models_app.command("show")(settings_command(show, ("model", *PREFIX_FOLDER)))
