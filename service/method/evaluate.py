"""Evaluate fixed representations on target tasks: probes per feature set, a markdown table, a plot.

For each target task: a held-out test split (by document, fixed seed), probes trained on a sample of
the rest. Rows: the plain backbone, every source prefix alone, baseline prefixes (e.g. the multi-task
prefix), the concat of the source prefixes, the concat without each source (leave-one-out), and the
concat as binary and int8 vectors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.engine.prefix import LoadedPrefix
from service.engine.torch_encoder import TorchEncoder
from service.method.data import TaskData, holdout, majority_accuracy, subsample
from service.method.features import feature_sets
from service.method.probes import CS, score_probe
from service.method.represent import encode_all


@dataclass(frozen=True)
class Target:
    name: str
    train: TaskData
    test: TaskData


def make_target(
    data: TaskData, *, test_fraction: float, n_train: int | None, n_test: int | None, seed: int = 0
) -> Target:
    """Test split carved by :func:`holdout` (the same one ``train --holdout`` keeps out), then sampled."""
    pool, test = holdout(data, test_fraction)
    return Target(data.name, subsample(pool, n_train, seed), subsample(test, n_test, seed))


@dataclass(frozen=True)
class Row:
    target: str
    representation: str
    kind: str
    dropped: str | None
    dim: int
    bytes_per_text: int
    accuracy: float
    macro_f1: float
    cv_accuracy: float  # of the probe's chosen C on the probe-training part (validation)
    c: float


def evaluate_target(
    encoder: TorchEncoder,
    target: Target,
    sources: Sequence[LoadedPrefix],
    baselines: Sequence[LoadedPrefix] = (),
    *,
    max_length: int = 128,
    cache_dir: Path | None = None,
    cs: Sequence[float] = CS,
    progress: bool = True,
) -> list[Row]:
    prefixes = [*sources, *baselines]
    kw: dict[str, Any] = {"max_length": max_length, "cache_dir": cache_dir, "progress": progress}
    rep_train = encode_all(encoder, prefixes, target.train.texts, **kw)
    rep_test = encode_all(encoder, prefixes, target.test.texts, **kw)
    src, base = [p.name for p in sources], [p.name for p in baselines]
    rows = []
    for fs_train, fs_test in zip(
        feature_sets(rep_train, src, base), feature_sets(rep_test, src, base), strict=True
    ):
        score = score_probe(
            fs_train.features, target.train.labels, fs_test.features, target.test.labels, cs=cs
        )
        rows.append(
            Row(target.name, fs_train.name, fs_train.kind, fs_train.dropped, fs_train.features.shape[1],
                fs_train.bytes_per_text, score.accuracy, score.macro_f1, score.cv_accuracy, score.c)
        )  # fmt: skip
    return rows


def evaluate(
    encoder: TorchEncoder,
    targets: Sequence[Target],
    sources: Sequence[LoadedPrefix],
    baselines: Sequence[LoadedPrefix] = (),
    **kw: Any,
) -> dict[str, Any]:
    """Rows for every target, plus each target's sizes and majority-class accuracy."""
    start = time.perf_counter()
    rows: list[Row] = []
    info = {}
    for t in targets:
        rows.extend(evaluate_target(encoder, t, sources, baselines, **kw))
        info[t.name] = {
            "n_train": len(t.train),
            "n_test": len(t.test),
            "labels": t.train.label_names,
            "majority_accuracy": majority_accuracy(t.train, t.test),
            "provenance": t.train.provenance,
        }
    return {
        "rows": [asdict(r) for r in rows],
        "targets": info,
        "sources": {p.name: p.digest for p in sources},
        "baselines": {p.name: p.digest for p in baselines},
        "seconds": round(time.perf_counter() - start, 1),
    }


def markdown_table(result: dict[str, Any]) -> str:
    """One table per target: accuracy and macro-F1 per representation, with the change from plain."""
    out = []
    for target, info in result["targets"].items():
        rows = [r for r in result["rows"] if r["target"] == target]
        plain = next(r for r in rows if r["kind"] == "plain")
        out.append(
            f"#### {target} (train {info['n_train']}, test {info['n_test']}, {len(info['labels'])} classes, "
            f"majority {info['majority_accuracy']:.3f})\n"
        )
        out.append("| representation | kind | dim | bytes/text | accuracy | Δ acc vs plain | macro-F1 |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            delta = r["accuracy"] - plain["accuracy"]
            out.append(
                f"| {r['representation']} | {r['kind']} | {r['dim']} | {r['bytes_per_text']} | "
                f"{r['accuracy']:.3f} | {delta:+.3f} | {r['macro_f1']:.3f} |"
            )
        out.append("")
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped bars: accuracy of each representation, one group per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(result["targets"])
    reps = list(dict.fromkeys(r["representation"] for r in result["rows"]))
    width = 0.8 / max(1, len(reps))
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(reps) * len(targets) * 0.4), 4.5))
    cmap = plt.get_cmap("tab20")
    for j, rep in enumerate(reps):
        vals = [
            next(
                (r["accuracy"] for r in result["rows"] if r["target"] == t and r["representation"] == rep),
                0.0,
            )
            for t in targets
        ]
        ax.bar([i + j * width for i in range(len(targets))], vals, width, label=rep, color=cmap(j % 20))
    for i, t in enumerate(targets):
        ax.hlines(
            result["targets"][t]["majority_accuracy"],
            i - width / 2,
            i + 0.8 - width / 2,
            colors="k",
            linestyles=":",
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(targets))], targets)
    ax.set_ylabel("probe accuracy on held-out test (dotted: majority class)")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
