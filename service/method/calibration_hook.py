"""The one calibration hook of every writer of a served prefix file (``train`` here; the heads'
``fit`` when it writes a prefix): once the file is written, measure it over the fixed calibration
corpus and write the calibration into it (service/registry/calibration_files.py). The file's digest
changes, so whatever pins the prefix (a head's ``inputs``, ``models.json``) must pin the prefix this
returns, not the one written before."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.config import Settings
from service.engine.prefix import LoadedPrefix

if TYPE_CHECKING:
    from service.engine.encoder import Encoder


def calibrate_written(path: Path, settings: Settings, *, encoder: Encoder | None = None) -> LoadedPrefix:
    """Calibrate the native prefix file ``path`` in place over the default calibration corpus, with
    the pooling of ``settings`` (the encoder: ``encoder``, or a torch encoder built from ``settings``),
    and return the file's prefix as the server loads it now (calibrated, with its new digest).
    FileNotFoundError (the file left as it was) when the corpus's data packages are not installed."""
    from service.backend import build_torch_encoder
    from service.engine.calibration import pooling_id
    from service.method.calibration_corpus import default_corpus
    from service.registry.calibration_files import calibrate_prefix_file
    from service.registry.names import prefix_name
    from service.registry.native import parse_native
    from service.registry.reading import read_limited

    enc = encoder or build_torch_encoder(settings)
    limits = settings.prefix_limits()
    calibrate_prefix_file(
        path,
        enc,
        default_corpus(),
        pooling=pooling_id(settings.pooling, settings.pooling_layers),
        limits=limits,
    )
    data = read_limited(path, limits.max_file_bytes, path.name, root=path.parent).data
    name = prefix_name(path) or path.stem
    return parse_native(name, data, enc.spec, source=path.name, limits=limits)
