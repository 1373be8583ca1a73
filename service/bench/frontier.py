"""The accuracy-against-cost frontier of backbones and prefix sets (issue 26).

Each point is a backbone with a set of vectors per text: ``base`` alone (the plain encoder) or
base + every prefix its ``ship`` record measured (its shipped prefixes, concatenated; the served
default of ``models.json`` when that record is missing). The set timed is the set whose accuracy is
read, so a default served model chosen on CV as a subset of the shipped prefixes (mpnet) does not
pair one set's cost with another's accuracy.
Cost per text is measured here, side by side in ONE process with the points interleaved: layer-rows
per text (from the engine's own forward calls, so the trunk's sharing is counted as served) and
texts/s through the served encoder (the backend ``auto`` picks: ONNX on CPU). Accuracy is read from
the experiments' ``ship`` records: a linear probe on the same vectors on the three target tasks
(RESULTS.md), the mean over targets; the members the accuracy was measured on are recorded next to the
set timed, so a mismatch is visible.

The greedy-fit points (issue 29's ``fit --select greedy``): per target, the inputs greedy forward
selection kept by CV on the fit part, read from the ``fit-rules`` test rows (fit on 1,000 of the
1,500 probe-training texts, the 750 test texts scored); their cost is the mean over the targets of
each chosen set's layer-rows and time (each set timed as served).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.bench.engine import time_interleaved
from service.bench.texts import sample_texts
from service.engine.encoder import CallLoop, ForwardCall
from service.engine.prefix import BASE_NAME


@dataclass(frozen=True)
class Point:
    label: str
    model: str  # a known backbone name
    served: bool  # True: base + the prefixes of its ship record (concat); False: base alone
    shipped: Path  # the experiments' ship record of this backbone (accuracy on the targets)
    fit: Path | None = None  # a greedy-fit point: fit-rules' record (per target, the inputs kept)


FRONTIER = (
    Point("MiniLM", "all-MiniLM-L6-v2", False, Path("results/trunk/shipped.json")),
    Point("MiniLM + prefixes (concat)", "all-MiniLM-L6-v2", True, Path("results/trunk/shipped.json")),
    Point("mpnet", "all-mpnet-base-v2", False, Path("results/trunk/all-mpnet-base-v2/shipped.json")),
    Point(
        "mpnet + prefixes (concat)",
        "all-mpnet-base-v2",
        True,
        Path("results/trunk/all-mpnet-base-v2/shipped.json"),
    ),
    Point(
        "MiniLM + prefixes (greedy fit)",
        "all-MiniLM-L6-v2",
        True,
        Path("results/trunk/shipped.json"),
        Path("results/fit/rules.json"),
    ),
    Point(
        "mpnet + prefixes (greedy fit)",
        "all-mpnet-base-v2",
        True,
        Path("results/trunk/all-mpnet-base-v2/shipped.json"),
        Path("results/fit/all-mpnet-base-v2/rules.json"),
    ),
)


def greedy_sets(point: Point) -> dict[str, list[str]]:
    """Per target, the inputs greedy selection kept (fit-rules' test row over its current sources)."""
    assert point.fit is not None
    doc = json.loads(point.fit.read_text())
    sources = [BASE_NAME, *doc["prefixes"]]
    return {
        r["target"]: list(r["inputs"])
        for r in doc["rows"]
        if r["rule"] == "greedy" and r["draw"] == 0 and r["prefixes"] == sources
    }


def accuracy(point: Point) -> dict[str, Any]:
    """Mean and per-target test accuracy of the point's vectors (probe on base, or on the concat, or
    the greedy fit's test rows)."""
    if point.fit is not None:
        if not point.fit.is_file():
            return {"error": f"{point.fit} missing: run the experiments' fit-rules for {point.model}"}
        doc = json.loads(point.fit.read_text())
        sources = [BASE_NAME, *doc["prefixes"]]
        rows = [
            r for r in doc["rows"] if r["rule"] == "greedy" and r["draw"] == 0 and r["prefixes"] == sources
        ]
        if not rows:
            return {"error": f"{point.fit}: no greedy test rows over its sources"}
        per = {r["target"]: r["accuracy"] for r in rows}
        return {"mean": statistics.mean(per.values()), "targets": per, "members": greedy_sets(point)}
    if not point.shipped.is_file():
        return {"error": f"{point.shipped} missing: run the experiments' ship step for {point.model}"}
    rec = json.loads(point.shipped.read_text())
    per = {
        t: (r["float"]["accuracy"] if point.served else r["base"]["accuracy"])
        for t, r in rec["concat_with_base"].items()
    }
    members = (
        [BASE_NAME, *(m.split(".seed")[0] for m in rec["transfer_members"])] if point.served else [BASE_NAME]
    )
    return {"mean": statistics.mean(per.values()), "targets": per, "members": members}


def _served_default(prefix_dir: Path) -> list[str]:
    from service.registry.served import read_served_models

    served = read_served_models(prefix_dir)
    if served.default is None:
        raise SystemExit(f"{prefix_dir}: no default served model (models.json)")
    return list(served.models[served.default].names)


def measure(points: tuple[Point, ...], n_texts: int, repeats: int, backbones_dir: Path) -> dict[str, Any]:
    """Layer-rows per text and texts/s of every point (interleaved), with the accuracy records."""
    from service.backend import build_encoder_for
    from service.config import Settings
    from service.engine.bank import PrefixBank
    from service.engine.direct import embed_sync
    from service.engine.prefix import base_prefix
    from service.registry.folder import scan_folder

    load_before = os.getloadavg()
    texts = sample_texts(n_texts)
    runs: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    for p in points:
        # the known name's folder and its prefix folder
        given: dict[str, Any] = {"model": Path(p.model), "backbones_dir": backbones_dir}
        settings = Settings(**given)
        encoder, choice = build_encoder_for(settings)
        loaded, rejected = scan_folder(settings.prefix_dir, encoder.spec, settings.prefix_limits())
        bank = PrefixBank.build(loaded, base=base_prefix(encoder.spec))
        sets = [[BASE_NAME]]
        if p.fit is not None:
            chosen = greedy_sets(p) if p.fit.is_file() else {}
            if not chosen:
                continue  # no fit record yet: the point is left out (its accuracy says why)
            sets = list(chosen.values())
        elif p.served:
            sets = [accuracy(p).get("members") or _served_default(settings.prefix_dir)]
        for names in sets:  # warm-up: a first call starts the ONNX export of a new depth in the background
            embed_sync(encoder, bank, names, texts)
        if isinstance(encoder, CallLoop):  # until then calls run at a shallower depth (no trunk shared)
            encoder.wait_for_exports()
        counted: list[ForwardCall] = []
        encoder.set_observer(counted.append)
        for names in sets:  # the count, at the depths as served
            embed_sync(encoder, bank, names, texts)
        encoder.set_observer(None)
        runs[p.label] = lambda e=encoder, b=bank, ns=sets: [embed_sync(e, b, n, texts) for n in ns]
        rows[p.label] = {
            "model": p.model,
            "backend": encoder.backend,
            "backend_reason": choice.reason,
            "vectors": sets[0] if len(sets) == 1 else sets,
            "sets": len(sets),
            "dim": encoder.dim * statistics.mean(len(n) for n in sets),
            "rejected": [r.reason for r in rejected],
            "layer_rows_per_text": sum(c.layer_rows for c in counted) / n_texts / len(sets),
        }
    seconds = time_interleaved(runs, repeats)
    for p in points:
        if p.label not in rows:
            continue
        row = rows[p.label]
        per_set = seconds[p.label] / row["sets"]  # a greedy point: the mean over its targets' sets
        row["texts_per_s"] = n_texts / per_set
        row["ms_per_text"] = 1000 * per_set / n_texts
        row["accuracy"] = accuracy(p)
        timed, measured = row["vectors"], row["accuracy"].get("members")
        if isinstance(measured, dict):  # greedy: one set per target, timed as chosen
            row["accuracy_members_match"] = sorted(map(sorted, measured.values())) == sorted(
                map(sorted, timed)
            )
        else:
            row["accuracy_members_match"] = measured is None or sorted(timed) == sorted(measured)
    return {
        "n_texts": n_texts,
        "repeats": repeats,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "points": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| point | vectors | dim | layer-rows / text | texts/s | ms / text | mean target acc | "
        "text-genre | tweet-sentiment | email-spam |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in result["points"].items():
        acc = r["accuracy"]
        per = acc.get("targets", {})
        cells = " | ".join(
            f"{per[t]:.3f}" if t in per else "" for t in ("text-genre", "tweet-sentiment", "email-spam")
        )
        mean = f"{acc['mean']:.3f}" if "mean" in acc else acc.get("error", "")
        vectors = r["vectors"]
        count = (
            f"{statistics.mean(len(v) for v in vectors):.1f}"
            if isinstance(vectors[0], list)
            else len(vectors)
        )
        lines.append(
            f"| {label} | {count} | {r['dim']:.0f} | {r['layer_rows_per_text']:.0f} | "
            f"{r['texts_per_s']:.1f} | {r['ms_per_text']:.1f} | {mean} | {cells} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Mean target accuracy against layer-rows per text and against ms per text (two panels)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = [(k, r) for k, r in result["points"].items() if "mean" in r["accuracy"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in (
        (
            axes[0],
            "layer_rows_per_text",
            "layer-rows per text (model-size independent: 1 = one layer, one text)",
        ),
        (axes[1], "ms_per_text", "ms per text on this CPU (served encoder, measured side by side)"),
    ):
        for label, r in pts:
            x, y = r[key], 100 * r["accuracy"]["mean"]
            marker = "o" if "MiniLM" in label else "s"
            ax.scatter([x], [y], marker=marker, s=60)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("mean accuracy on the 3 target tasks (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy against cost per text (linear probe on fixed vectors; RESULTS.md)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
