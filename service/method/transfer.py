"""Does task similarity predict transfer? Rankings of source prefixes for each target task, compared.

For a target task T (a prefix trained on T's probe-training pool, never on its test split) and each
source prefix S: the similarity of their task embeddings, and two measured transfers from the
``evaluate`` result: ``gain`` = accuracy(S alone) - accuracy(plain backbone), and ``loo`` =
accuracy(concat) - accuracy(concat without S) (how much S contributes inside the concat). Spearman's
rho between similarity and each transfer, per target, for each pair of prefix sets (final prefixes,
early checkpoints).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from service.engine.prefix import LoadedPrefix
from service.registry.similarity import similarity


def task_of(prefix: LoadedPrefix) -> str:
    return str(prefix.metadata.get("task", prefix.name))


def measured_transfer(evaluation: dict[str, Any], target: str) -> dict[str, dict[str, float]]:
    """{source: {"gain": ..., "loo": ...}} for ``target`` from an ``evaluate`` result."""
    rows = [r for r in evaluation["rows"] if r["target"] == target]
    acc = {r["representation"]: r["accuracy"] for r in rows}
    out = {}
    for r in rows:
        if r["kind"] == "single":
            s = r["representation"]
            out[s] = {"gain": acc[s] - acc["plain"], "loo": acc["concat"] - acc.get(f"concat - {s}", np.nan)}
    return out


def _rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def _similarity(source: LoadedPrefix, target: LoadedPrefix, measure: str) -> float:
    """The pair's similarity (over the layers both act in); NaN when it cannot be compared."""
    value = similarity(source, target, measure)
    return float("nan") if value is None else value


def transfer_report(
    evaluation: dict[str, Any],
    variants: Mapping[str, tuple[Sequence[LoadedPrefix], Sequence[LoadedPrefix]]],
    measure: str = "mean",
) -> dict[str, Any]:
    """``variants``: {label: (source prefixes, target prefixes)}; sources matched to the evaluation's
    source names by their metadata ``task`` (checkpoints carry their task's name), targets to its targets."""
    src_names = list(evaluation["sources"])
    report: dict[str, Any] = {"measure": measure, "targets": {}}
    for target in evaluation["targets"]:
        transfer = measured_transfer(evaluation, target)
        entry: dict[str, Any] = {"transfer": transfer, "variants": {}}
        for label, (sources, targets) in variants.items():
            tp = next((p for p in targets if task_of(p) == target), None)
            by_task = {task_of(p): p for p in sources}
            if tp is None or not all(s in by_task for s in src_names):
                continue
            sims = {s: _similarity(by_task[s], tp, measure) for s in src_names}
            entry["variants"][label] = {
                "similarity": sims,
                "ranking": sorted(src_names, key=lambda s: -sims[s]),
                "rho_gain": _rho([sims[s] for s in src_names], [transfer[s]["gain"] for s in src_names]),
                "rho_loo": _rho([sims[s] for s in src_names], [transfer[s]["loo"] for s in src_names]),
                # ties in the measured gain (equal accuracies) count for every tied source
                "top1_is_best_gain": transfer[max(src_names, key=lambda s: sims[s])]["gain"]
                == max(transfer[s]["gain"] for s in src_names),
            }
        final = entry["variants"].get("final")
        for label, v in entry["variants"].items():
            if final is not None and label != "final":
                v["rho_vs_final"] = _rho(
                    [final["similarity"][s] for s in src_names], [v["similarity"][s] for s in src_names]
                )
        report["targets"][target] = entry
    return report


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def transfer_markdown(report: dict[str, Any]) -> str:
    lines = []
    for target, entry in report["targets"].items():
        tr = entry["transfer"]
        lines.append(f"#### {target}\n")
        labels = list(entry["variants"])
        head = "| source | gain (alone - plain) | loo (concat - without) | " + " | ".join(
            f"sim {lb}" for lb in labels
        )
        lines += [head + " |", "|---|---:|---:|" + "---:|" * len(labels)]
        for s, t in tr.items():
            sims = " | ".join(f"{entry['variants'][lb]['similarity'][s]:+.3f}" for lb in labels)
            lines.append(f"| {s} | {t['gain']:+.3f} | {t['loo']:+.3f} | {sims} |")
        for lb in labels:
            v = entry["variants"][lb]
            lines.append(
                f"\n{lb}: ranking {' > '.join(v['ranking'])}; Spearman rho vs gain {_fmt(v['rho_gain'])}, "
                f"vs loo {_fmt(v['rho_loo'])}; most similar = best single source: {v['top1_is_best_gain']}"
                + (
                    f"; rho vs the final similarities {_fmt(v['rho_vs_final'])}"
                    if "rho_vs_final" in v
                    else ""
                )
            )
        lines.append("")
    return "\n".join(lines)
