"""``python -m service calibrate``: measure prefixes (and ``base``) over the calibration corpus and
write their calibrations (service/registry/calibration_files.py), so ``int8``/``uint8``/``binary``/
``ubinary`` use them. Registered in service/cli.py; the engine and folder options are the generated
settings flags."""

from __future__ import annotations

import logging
import time
from typing import Annotated

import typer

from service.config import Settings


def calibrate_cmd(
    settings: Settings,
    prefix: Annotated[
        list[str] | None,
        typer.Option(
            "--prefix", help="A native prefix file's name to calibrate (repeat; default: every one)."
        ),
    ] = None,
    base: Annotated[
        bool, typer.Option(help="Also write base.<fingerprint>.calibration.json (the built-in base).")
    ] = True,
    batch: Annotated[int, typer.Option(min=1, help="Texts per forward call.")] = 32,
    force: Annotated[
        bool, typer.Option(help="Measure again files already calibrated over this corpus and pooling.")
    ] = False,
) -> None:
    """Calibrate prefix files of --prefix-dir in place (their digests change: re-pin models.json), and
    the base calibration file, over the fixed calibration corpus (service/method/calibration_corpus.py)."""
    from service.backend import build_torch_encoder
    from service.engine.calibration import pooling_id
    from service.errors import PrefixEmbedError
    from service.method.calibration_corpus import default_corpus
    from service.registry.calibration_files import calibrate_files, repairable
    from service.registry.folder import scan_folder
    from service.registry.served import read_served_models

    logging.basicConfig(level=logging.WARNING)
    encoder = build_torch_encoder(settings)
    folder = settings.prefix_dir
    loaded, rejected = scan_folder(folder, encoder.spec, settings.prefix_limits())
    limits = settings.prefix_limits()
    sources = {p.name: p.source for p in loaded if p.kind == "native"}
    for r in rejected:
        path = folder / r.source
        if repairable(path, encoder.spec, limits):  # refused only for its calibration: calibrating repairs it
            sources[path.stem] = r.source
            typer.echo(f"rejected (calibrating repairs it): {r.reason}", err=True)
        else:
            typer.echo(f"rejected {r.reason}", err=True)
    names = prefix or sorted(sources)
    problems = [n for n in names if n not in sources]
    if problems:
        typer.echo(f"error: not a native prefix file of {folder}: {', '.join(problems)}", err=True)
        raise typer.Exit(2)
    corpus = default_corpus()
    t0 = time.perf_counter()
    try:
        written = calibrate_files(
            [folder / sources[n] for n in names],
            encoder,
            corpus,
            pooling=pooling_id(settings.pooling, settings.pooling_layers),
            base_folder=folder if base else None,
            limits=limits,
            batch=batch,
            force=force,
        )
    except (PrefixEmbedError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from None
    took = time.perf_counter() - t0
    typer.echo(f"corpus {corpus.name}: {len(corpus.texts)} texts, sha256 {corpus.sha256[:16]}; {took:.0f} s")
    for w in written:
        verb = "calibrated" if w.written else "up to date"
        typer.echo(f"{verb} {w.path.name}: calibration {w.calibration.digest}")
    if any(w.written and w.path.suffix == ".safetensors" for w in written):
        if read_served_models(folder).present:
            typer.echo(
                "prefix digests changed: re-pin models.json (python -m service models pin --prefix-dir "
                f"{folder} --description '...')"
            )
        if any((folder / "heads").glob("*.safetensors")):  # heads pin their inputs' digests
            typer.echo(
                "heads reading these prefixes are unavailable until re-fitted on the new digests "
                "(train writes its own; the shipped ones: python -m service.method.experiments heads)"
            )
