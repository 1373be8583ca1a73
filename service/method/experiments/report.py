"""``report``: the depth and recipe tables from the recorded runs; ``ship``: copy a row's prefixes
into prefixes/ (each must beat base on its own task) and measure the shipped set's transfer."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from service.method.experiments.rows import OUT, ROWS, SOURCES, TARGETS, TVEC, log
from service.method.experiments.targets import target_labels, transfer


def _runs() -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted((OUT / "runs").glob("*/*.json"))]


def _has_vectors(folder: str, stem: str) -> bool:
    return all((TVEC / folder / f"{stem}.{t}.npy").is_file() for t in TARGETS)


def report() -> None:
    """results/trunk/report.{json,md}: every run, and the transfer of each row's set of prefixes."""
    runs = _runs()
    by = {(r["row"], r["task"], r["seed"]) for r in runs}
    labels = target_labels()
    out: dict[str, Any] = {"runs": runs, "transfer": {}}
    for row, (_, has_transfer) in ROWS.items():
        if not has_transfer or row == "depth4":  # depth4 = the earlier shipped set: measured by ship
            continue
        for seed in sorted({r["seed"] for r in runs if r["row"] == row}):
            members = [
                (row, f"{t}.seed{seed}")
                for t in SOURCES
                if (row, t, seed) in by and _has_vectors(row, f"{t}.seed{seed}")
            ]
            if len(members) < 2:
                continue
            log(f"transfer {row} seed {seed} with {members}")
            out["transfer"][f"{row}.seed{seed}"] = transfer(labels, members) | {
                "members": [m[1] for m in members]
            }
    (OUT / "report.json").write_text(json.dumps(out, indent=2) + "\n")
    (OUT / "report.md").write_text(markdown(out))
    log(f"wrote {OUT / 'report.json'} and report.md")


def _pm(x: float, se: float) -> str:
    return f"{100 * x:+.1f} ± {100 * se:.1f}"


def markdown(rep: dict[str, Any]) -> str:
    runs = rep["runs"]
    lines = ["## Depth table (same data, 75 steps, seed 0; source-task test split)", ""]
    lines.append(
        "| task | S | dev acc | test acc prefix | test acc base | gain (pt) ± SE | best step | s/step (loaded CPU) |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    depth_runs = (r for r in runs if r["row"].startswith("depth") and r["seed"] == 0)
    for r in sorted(depth_runs, key=lambda r: (r["task"], r["config"]["first_layer"])):
        v = r["source_value"]
        lines.append(
            f"| {r['task']} | {r['config']['first_layer']} | {r['dev']['accuracy']:.3f} | {v['prefix']['accuracy']:.3f} | "
            f"{v['base']['accuracy']:.3f} | {_pm(v['gain'], v['gain_se'])} | {r['best_step']} | {r['seconds_per_step']:.2f} |"
        )  # fmt: skip
    lines += ["", "Compute per text (layer-rows, L = 6): base alone 6; one prefix at S beside base: S + 2(L-S);",
              "base + 4 prefixes: S + 5(L-S) = " + ", ".join(f"S={s}: {s + 5 * (6 - s)}" for s in (0, 3, 4, 5)), ""]  # fmt: skip
    lines += ["## Recipe rows (S = 4 unless named; seed 0)", ""]
    lines.append(
        "| row | mean dev acc | mean source gain (test, pt) | "
        + " | ".join(f"{t}: concat - base (test pt ± SE; CV pt)" for t in TARGETS)
        + " | mean target gain (test; CV) |"
    )
    lines.append("|---|---:|---:|" + "---:|" * len(TARGETS) + "---:|")
    for row in ROWS:
        rs = [r for r in runs if r["row"] == row and r["seed"] == 0 and r["task"] != "editorial-sentiment"]
        if not rs:
            continue
        dev = statistics.mean(r["dev"]["accuracy"] for r in rs)
        gain = statistics.mean(r["source_value"]["gain"] for r in rs)
        tr = rep["transfer"].get(f"{row}.seed0") or {}
        cells = [
            f"{_pm(tr[t]['float']['gain'], tr[t]['float']['gain_se'])}; {100 * tr[t]['float']['cv_gain']:+.1f}"
            if t in tr
            else ""
            for t in TARGETS
        ]
        mean = ""
        if all(t in tr for t in TARGETS):
            test_gain = statistics.mean(tr[t]["float"]["gain"] for t in TARGETS)
            cv_gain = statistics.mean(tr[t]["float"]["cv_gain"] for t in TARGETS)
            mean = f"{100 * test_gain:+.1f}; {100 * cv_gain:+.1f}"
        lines.append(
            f"| {row} ({len(rs)} tasks) | {dev:.3f} | {100 * gain:+.1f} | "
            + " | ".join(cells)
            + f" | {mean} |"
        )
    return "\n".join(lines) + "\n"


def ship(row: str, tasks: list[str], seed: int) -> None:
    """Copy the ``row`` prefixes (seed ``seed``) of ``tasks`` into prefixes/ as <task>.safetensors (each
    must beat base on its own task's test split), then measure them on the targets: each alone, the
    default concat (base first) and the concat without base, against base; binary/int8 vs float."""
    shipped = []
    for t in tasks:
        rec = json.loads((OUT / "runs" / row / f"{t}.seed{seed}.json").read_text())
        v = rec["source_value"]
        if v["gain"] <= 0:
            log(f"{t}: does not beat base on its own task ({v['gain']:+.3f}); not shipped")
            continue
        shutil.copyfile(Path(rec["file"]), Path("prefixes") / f"{t}.safetensors")
        shipped.append(rec)
    labels = target_labels()
    members = sorted((row, f"{r['task']}.seed{seed}") for r in shipped)  # served order: names sorted
    members = [m for m in members if _has_vectors(*m)]
    log(f"transfer measured with {[m[1] for m in members]}")
    out: dict[str, Any] = {
        "row": row,
        "seed": seed,
        "prefixes": shipped,
        "transfer_members": [m[1] for m in members],
    }
    out["concat_with_base"] = transfer(labels, members, with_base=True)
    out["concat_without_base"] = transfer(labels, members, with_base=False)
    out["single"] = {m[1]: transfer(labels, [m], with_base=False, float_only=True) for m in members}
    (OUT / "shipped.json").write_text(json.dumps(out, indent=2) + "\n")
    (OUT / "shipped.md").write_text(shipped_markdown(out))
    log(f"shipped {[r['task'] for r in shipped]}")


def shipped_markdown(rep: dict[str, Any]) -> str:
    lines = [
        "| prefix | data (train/dev/test) | dev acc | test acc prefix | test acc base | gain (pt) ± SE |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rep["prefixes"]:
        v = r["source_value"]
        lines.append(
            f"| {r['task']} | {r['n_train']}/{r['n_dev']}/{v['n_test']} | {r['dev']['accuracy']:.3f} | "
            f"{v['prefix']['accuracy']:.3f} | {v['base']['accuracy']:.3f} | {_pm(v['gain'], v['gain_se'])} |"
        )
    lines += [
        "",
        "| target | base acc | representation | dim | acc | vs base (pt ± SE) | CV vs base (pt) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for t in TARGETS:
        b = rep["concat_with_base"][t]["base"]["accuracy"]
        reps = [
            ("concat (base + prefixes)", rep["concat_with_base"][t], ("float", "binary", "int8")),
            ("concat without base", rep["concat_without_base"][t], ("float",)),
        ]
        reps += [
            (f"{name.split('.')[0]} alone", single[t], ("float",)) for name, single in rep["single"].items()
        ]
        for label, res, encs in reps:
            for enc in encs:
                x = res[enc]
                extra = f" (vs float {_pm(x['vs_float'], x['vs_float_se'])})" if enc != "float" else ""
                lines.append(
                    f"| {t} | {b:.3f} | {label} {enc}{extra} | {x['dim']} | {x['accuracy']:.3f} | "
                    f"{_pm(x['gain'], x['gain_se'])} | {100 * x['cv_gain']:+.1f} |"
                )
    for key in ("concat_with_base", "concat_without_base"):
        g = [rep[key][t]["float"]["gain"] for t in TARGETS]
        cv = [rep[key][t]["float"]["cv_gain"] for t in TARGETS]
        lines.append(
            f"\n{key}: mean target gain {100 * statistics.mean(g):+.2f} pt (test), "
            f"{100 * statistics.mean(cv):+.2f} pt (CV); min {100 * min(g):+.2f}"
        )
    return "\n".join(lines) + "\n"
