"""Print a markdown table of trained prefixes from their metadata (no model needed).

Usage: python scripts/method/training_table.py prefixes/*.safetensors results/prefixes/targets/*.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def metadata(path: Path) -> dict:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n]).get("__metadata__", {})
    return {k: json.loads(v) if v[:1] in "[{" else v for k, v in meta.items()}


def main(paths: list[str]) -> None:
    print(
        "| prefix | task | train / dev | steps run (best) | dev macro-F1 step 0 -> best | dev acc (majority) | seconds | size |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for p in map(Path, paths):
        m = metadata(p)
        tr, data = m["training"], m["data"]
        hist = {h["step"]: h["macro_f1"] for h in tr.get("dev_history", [])}
        dev = m["dev_metrics"]
        if "n_train" in data:
            sizes = f"{data['n_train']} / {data['n_dev']}"
            acc = f"{dev['accuracy']:.3f} ({dev['majority_accuracy']:.3f})"
        else:  # multi-task: one entry per task
            sizes = " + ".join(str(d["n_train"]) for d in data.values())
            acc = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in dev.items())
        best = hist.get(tr["best_step"], float("nan"))
        print(
            f"| {p.stem} | {m['task']} | {sizes} | {tr['steps_run']} ({tr['best_step']}) | "
            f"{hist.get(0, float('nan')):.3f} -> {best:.3f} | {acc} | {tr['seconds']:.0f} | {p.stat().st_size / 1024:.0f} KiB |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
