"""What "a shipped folder is calibrated" means, checked the way the server decides to use a
calibration: each native prefix file and the folder's ``base`` record carry statistics measured on
their own tensors (``vectors_identity``), with the backbone and pooling the folder is served with,
over the fixed calibration corpus (its sha256). A file failing any of these serves ``int8``/``binary``
through the uncalibrated fallback."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.engine.backbone import BackboneSpec
from service.engine.calibration import applicable, measures, pooling_id
from service.engine.prefix import base_prefix
from service.method.calibration_corpus import NAME, default_corpus
from service.registry.calibration import read_base_calibration
from service.registry.folder import scan_folder


def assert_folder_calibrated(folder: Path, spec: BackboneSpec) -> list[str]:
    """Assert every native prefix of ``folder`` and its base record are calibrated as served; return
    the names checked."""
    settings = Settings.model_validate({})  # the defaults a plain `serve` runs with
    pooling = pooling_id(settings.pooling, settings.pooling_layers)
    corpus = default_corpus()
    loaded, rejected = scan_folder(folder, spec, settings.prefix_limits())
    assert rejected == []
    native = [p for p in loaded if p.kind == "native"]
    assert native
    for p in native:
        cal = applicable(p, pooling)
        assert cal is not None, f"{p.name}: no calibration for pooling {pooling}"
        assert cal.fingerprint == spec.fingerprint, p.name
        assert cal.corpus["name"] == NAME, p.name
        assert measures(cal, p, corpus, pooling), f"{p.name}: calibrated on other tensors or text"
    base = read_base_calibration(folder, spec)
    assert base is not None, f"{folder}: no base calibration for {spec.fingerprint}"
    assert measures(base, base_prefix(spec), corpus, pooling)
    return [p.name for p in native]
