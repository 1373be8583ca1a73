"""``quantization``: the served default concat on the three targets in every encoding, calibrated and
not (issue 25): float, int8, uint8, binary, ubinary, each the probe's accuracy with its paired SE
against float and against ``base`` float, and the bytes per text.

The vectors are the engine's (``encode_all``, the served path: base and the folder's default model,
max 64 tokens, the targets' 1,500/750 texts of the RESULTS protocol); each encoding is the concat's
codes exactly as ``/embed`` returns them (service/method/features.py), with each member's calibration
from the folder ("calibrated") or with none (the "uncalibrated" fallback). Writes
results/quantization.{json,md}; another known backbone NAME (``--model``) its own folder's default
model, into results/quantization/NAME.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.prefix import BASE_NAME
from service.engine.torch_encoder import TorchEncoder
from service.method.corpora import load_builtin
from service.method.evaluate import make_target
from service.method.experiments.rows import CS, DEFAULT_BACKBONE, N_TARGET, TARGETS, Study, log
from service.method.features import BYTES_PER_DIM, encodings
from service.method.probes import ProbeScore, paired_gain, score_probe
from service.method.represent import PLAIN, encode_all
from service.registry.registry import PrefixRegistry

OUT = Path("results")
QUANTIZED = ("int8", "uint8", "binary", "ubinary")


def _row(p: ProbeScore, versus: dict[str, ProbeScore], dim: int, enc: str) -> dict[str, Any]:
    row: dict[str, Any] = {"accuracy": p.accuracy, "cv_accuracy": p.cv_accuracy, "c": p.c,
                           "bytes_per_text": int(dim * BYTES_PER_DIM[enc])}  # fmt: skip
    for name, other in versus.items():
        gain, se = paired_gain(p, other)
        row[f"vs_{name}"], row[f"vs_{name}_se"] = gain, se
        row[f"cv_vs_{name}"] = p.cv_accuracy - other.cv_accuracy
    return row


def quantization(study: Study, prefix_dir: Path | None = None, threads: int = 1) -> dict[str, Any]:
    """Measure every encoding of the default served model of ``prefix_dir`` (default: the study
    backbone's own folder) on the three targets."""
    import torch

    torch.set_num_threads(threads)
    prefix_dir = prefix_dir or study.ship_dir
    backbone = study.load()
    encoder = TorchEncoder(backbone, pooling="mean")
    snap = PrefixRegistry(prefix_dir, backbone.spec).scan()
    if snap.served.default is None:
        raise ValueError(f"{prefix_dir} has no default served model (models.json)")
    members = [snap.bank.get(n) for n in snap.served.models[snap.served.default].names]
    calibrations = [p.calibration for p in members if p.calibration is not None]
    if len(calibrations) != len(members):
        raise ValueError(f"uncalibrated members: python -m service calibrate --prefix-dir {prefix_dir}")
    files = [p for p in members if not p.builtin]
    out: dict[str, Any] = {
        "members": [
            {"name": p.name, "digest": p.digest, "calibration": c.digest}
            for p, c in zip(members, calibrations, strict=True)
        ],
        "corpus": calibrations[0].corpus,
        "targets": {},
    }
    for target, (dataset, length) in TARGETS.items():
        t = make_target(load_builtin(dataset), test_fraction=0.3, n_train=N_TARGET[0], n_test=N_TARGET[1])
        texts = t.train.texts + t.test.texts
        reps = encode_all(
            encoder, files, texts, max_length=length, cache_dir=study.vec / "served", progress=False
        )
        vectors = [reps[PLAIN if p.name == BASE_NAME else p.name] for p in members]
        n, y_train, y_test = len(t.train), t.train.labels, t.test.labels

        def probe(
            x: np.ndarray, y_train: list[str] = y_train, y_test: list[str] = y_test, n: int = n
        ) -> ProbeScore:
            return score_probe(x[:n], y_train, x[n:], y_test, cs=CS)

        base = probe(encodings([vectors[0]], which=("float",))["float"])
        full = encodings(vectors, which=("float",))["float"]
        concat = probe(full)
        dim = full.shape[1]
        res: dict[str, Any] = {
            "base float": _row(base, {}, vectors[0].shape[1], "float"),
            "float": _row(concat, {"base": base}, dim, "float"),
        }
        for label, cals in (("calibrated", calibrations), ("uncalibrated", None)):
            for enc, x in encodings(vectors, cals, which=QUANTIZED).items():
                res[f"{enc} {label}"] = _row(probe(x), {"float": concat, "base": base}, dim, enc)
        out["targets"][target] = res
        log(f"{target}: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in res.items()))
    out["backbone"] = {"name": study.model, "fingerprint": backbone.spec.fingerprint}
    stem = OUT / "quantization" if study.model == DEFAULT_BACKBONE else OUT / "quantization" / study.model
    stem.parent.mkdir(parents=True, exist_ok=True)
    (stem.parent / f"{stem.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (stem.parent / f"{stem.name}.md").write_text(markdown(out))
    return out


def _pm(x: float, se: float) -> str:
    return f"{100 * x:+.1f} ± {100 * se:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The RESULTS.md table: per target and encoding, accuracy, vs float and vs base (paired SE), CV."""
    targets = list(result["targets"])
    lines = [
        "| encoding | bytes/text | "
        + " | ".join(f"{t}: acc, vs float, vs base" for t in targets)
        + " | mean vs float / vs base |"
    ]
    lines.append("|---|---:|" + "---|" * (len(targets) + 1))
    rows = list(result["targets"][targets[0]])
    for row in rows:
        cells, vs_float, vs_base = [], [], []
        for t in targets:
            r = result["targets"][t][row]
            parts = [f"{r['accuracy']:.3f}"]
            if "vs_float" in r:
                parts.append(_pm(r["vs_float"], r["vs_float_se"]))
                vs_float.append(r["vs_float"])
            if "vs_base" in r:
                parts.append(_pm(r["vs_base"], r["vs_base_se"]))
                vs_base.append(r["vs_base"])
            cells.append("; ".join(parts))
        mean = " / ".join(f"{100 * sum(v) / len(v):+.2f}" if v else "-" for v in (vs_float, vs_base))
        bytes_ = result["targets"][targets[0]][row]["bytes_per_text"]
        lines.append(f"| {row} | {bytes_:,} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines) + "\n"
