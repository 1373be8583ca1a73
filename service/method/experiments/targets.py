"""``targets``: the three target tasks' vectors under base and under trained prefixes; ``transfer``:
the probe on a concat of them against the probe on base (float, binary and int8 encodings)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.config import default_model_path
from service.engine.backbone import load_backbone
from service.method.corpora import load_builtin
from service.method.evaluate import make_target
from service.method.experiments.rows import (
    CS,
    N_TARGET,
    PREFIX_OUT,
    ROWS,
    TARGETS,
    TVEC,
    VEC,
    built_once,
    log,
)
from service.method.features import encodings
from service.method.prefix_io import load_prefixes
from service.method.probes import paired_gain, score_probe
from service.method.trunk import TrunkCache, build_trunk_cache, pooled_all


def _target_cache(backbone: Any, s: int) -> dict[str, TrunkCache]:
    """The targets' probe-training + test texts through the trunk at depth ``s``, built once on disk
    (shared by parallel workers); the builder also writes their base vectors."""

    def build() -> dict[str, tuple[dict[int, list[torch.Tensor]], torch.Tensor]]:
        built = {}
        for name, (ds, length) in TARGETS.items():
            t = make_target(load_builtin(ds), test_fraction=0.3, n_train=N_TARGET[0], n_test=N_TARGET[1])
            t0 = time.perf_counter()
            built[name] = build_trunk_cache(backbone, t.train.texts + t.test.texts, None, [s], length)
            TVEC.mkdir(parents=True, exist_ok=True)
            np.save(TVEC / f"base.{name}.npy", built[name].base.numpy())
            log(f"{name}: trunk at S={s} in {time.perf_counter() - t0:.0f}s")
        return {n: (c.states, c.base) for n, c in built.items()}

    loaded = built_once(VEC / "states" / f"targets{N_TARGET[0]}x{N_TARGET[1]}.S{s}.pt", build)
    return {n: TrunkCache(st, b) for n, (st, b) in loaded.items()}


def _claim(todo: list[Path]) -> Path | None:
    """The first file no other worker has claimed (workers share the list)."""
    for f in todo:
        try:
            (TVEC / "claims").mkdir(parents=True, exist_ok=True)
            (TVEC / "claims" / f"{f.parent.name}.{f.stem}").touch(exist_ok=False)
            return f
        except FileExistsError:
            continue
    return None


def target_vectors(
    threads: int,
    until: float,
    rows: list[str] | None = None,
    wait: bool = False,
    depth: int = 3,
    seeds: list[int] | None = None,
) -> None:
    """Vectors of the three targets' texts (:data:`N_TARGET` probe-training + test texts each) under
    base and under every prefix of ``rows`` (default: the rows with transfer), of ``seeds`` only if
    given (transfer is measured on the shipped seed). With ``wait``, keeps polling for new files
    until ``until`` (unix time); otherwise returns when none is left."""
    torch.set_num_threads(threads)
    backbone = load_backbone(default_model_path(), device="cpu", dtype="float32")
    caches = {depth: _target_cache(backbone, depth)}  # the targets' trunk now, while the rows train
    rows = rows or [r for r, (_, transfer) in ROWS.items() if transfer]
    while time.time() < until:
        files = [
            f
            for row in rows
            for f in sorted((PREFIX_OUT / row).glob("*.safetensors"))
            if seeds is None or any(f.stem.endswith(f".seed{s}") for s in seeds)
        ]
        todo = [
            f
            for f in files
            if not all((TVEC / f.parent.name / f"{f.stem}.{t}.npy").is_file() for t in TARGETS)
        ]
        claimed = _claim(todo)
        if claimed is None:
            if not wait:
                return
            time.sleep(20)
            continue
        (p,) = load_prefixes([claimed], backbone.spec)
        if p.position_shift:
            raise ValueError(
                f"{claimed}: shifted positions; the cached trunk path is for position_convention none"
            )
        if p.first_layer not in caches:
            caches[p.first_layer] = _target_cache(backbone, p.first_layer)
        for name, cache in caches[p.first_layer].items():
            out = TVEC / claimed.parent.name / f"{claimed.stem}.{name}.npy"
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, pooled_all(backbone, cache, p.first_layer, p.key, p.value).numpy())
        log(f"target vectors of {claimed.parent.name}/{claimed.stem}")


def target_labels() -> dict[str, tuple[list[str], list[str]]]:
    out = {}
    for name, (ds, _) in TARGETS.items():
        t = make_target(load_builtin(ds), test_fraction=0.3, n_train=N_TARGET[0], n_test=N_TARGET[1])
        out[name] = (t.train.labels, t.test.labels)
    return out


def transfer(
    labels: dict[str, tuple[list[str], list[str]]],
    members: list[tuple[str, str]],
    with_base: bool = True,
    float_only: bool = False,
) -> dict[str, Any]:
    """Per target: probe on base vs probe on the concat (base first if ``with_base``, then ``members``:
    (folder under :data:`TVEC`, file stem)); float, binary and int8 encodings of the concat (float
    only with ``float_only``)."""
    out: dict[str, Any] = {}
    for name, (y_train, y_test) in labels.items():
        base = np.load(TVEC / f"base.{name}.npy")
        vecs = [np.load(TVEC / folder / f"{stem}.{name}.npy") for folder, stem in members]
        n = len(y_train)
        base_p = score_probe(base[:n], y_train, base[n:], y_test, cs=CS)
        res: dict[str, Any] = {
            "base": {"accuracy": base_p.accuracy, "cv_accuracy": base_p.cv_accuracy, "se": base_p.stderr}
        }
        float_p = None
        for enc, x in encodings(([base] if with_base else []) + vecs).items():
            if float_only and enc != "float":
                continue
            p = score_probe(x[:n], y_train, x[n:], y_test, cs=CS)
            gain, se = paired_gain(p, base_p)
            res[enc] = {"accuracy": p.accuracy, "cv_accuracy": p.cv_accuracy, "gain": gain, "gain_se": se,
                        "cv_gain": p.cv_accuracy - base_p.cv_accuracy, "dim": int(x.shape[1])}  # fmt: skip
            if float_p is None:
                float_p = p
            else:
                d, dse = paired_gain(p, float_p)
                res[enc] |= {"vs_float": d, "vs_float_se": dse}
        out[name] = res
    return out
