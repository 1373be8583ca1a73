"""Issue 24: ship the new source prefixes and measure the whole set (RESULTS.md, "Twelve sources").

    python scripts/data/sources.py ship --tasks tweet-emotion,...   # gate on own-task gain > 1 SE
    python scripts/data/sources.py seeds --tasks tweet-emotion,...  # gains over seeds 0-2, mean and SD
    python scripts/data/sources.py transfer                          # default concat vs 5-set vs base
    python scripts/data/sources.py cost                              # texts/s: all vs default vs base
    python scripts/data/sources.py served --file F --task T          # engine vector == training path
    python -m service similarity --prefix prefixes --heatmap results/sources/similarity.png

Training itself is ``python -m service.method.experiments run --task T --rows s3full-cos`` (the
shipped recipe); the targets' vectors of every prefix of that row come from its ``targets`` command.
Nothing here reads a source task's test split to choose: ``ship`` applies the issue's fixed rule
(gain > its paired SE) to the recorded source value, and reports the ones that fail it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)  # the experiments' paths (results/trunk, .cache/trunk) are relative to the repository

from service.method.experiments.rows import OUT as RUNS_OUT  # noqa: E402
from service.method.experiments.rows import TARGETS, TVEC, log  # noqa: E402
from service.method.experiments.targets import target_labels  # noqa: E402
from service.method.experiments.targets import transfer as measure_transfer  # noqa: E402

OUT = ROOT / "results" / "sources"
ROW = "s3full-cos"
# the five prefixes shipped before issue 24 (results/trunk/shipped.json)
OLD = ["editorial-sentiment", "news-topic", "question-type", "sentiment", "sms-spam"]


def ship(tasks: list[str], seed: int, row: str = ROW) -> None:
    """Copy each task's prefix of ``row`` into prefixes/ iff its own-task gain over base exceeds its
    paired SE (a row other than the shipped recipe only after it won on dev: RESULTS.md)."""
    OUT.mkdir(parents=True, exist_ok=True)
    table = []
    for t in tasks:
        rec = json.loads((RUNS_OUT / "runs" / row / f"{t}.seed{seed}.json").read_text())
        v = rec["source_value"]
        ok = v["gain"] > v["gain_se"]
        table.append({"task": t, "row": row, "seed": seed, "gain": v["gain"], "gain_se": v["gain_se"], "shipped": ok,
                      "base": v["base"]["accuracy"], "prefix": v["prefix"]["accuracy"],
                      "dev": rec["dev"]["accuracy"], "n_train": rec["n_train"], "n_dev": rec["n_dev"],
                      "n_test": v["n_test"], "seconds": rec["seconds"]})  # fmt: skip
        if ok:
            shutil.copyfile(ROOT / rec["file"], ROOT / "prefixes" / f"{t}.safetensors")
        log(
            f"{t}: gain {100 * v['gain']:+.1f} +- {100 * v['gain_se']:.1f} pt -> {'shipped' if ok else 'NOT shipped'}"
        )

    def key(r: dict[str, Any]) -> str:
        return f"{r['task']}/{r.get('row', ROW)}"

    earlier = json.loads((OUT / "ship.json").read_text()) if (OUT / "ship.json").is_file() else []
    done = {key(r): r for r in earlier} | {key(r): r for r in table}  # other decisions are kept
    (OUT / "ship.json").write_text(json.dumps(list(done.values()), indent=2) + "\n")


def seeds(tasks: list[str]) -> None:
    """The own-task gain of each task's recorded seeds (the same fixed test split; a seed changes the
    train/dev split, the prefix's start and the batch order), with mean and SD over the seeds."""
    rows = []
    for t in tasks:
        recs = sorted(
            (json.loads(f.read_text()) for f in (RUNS_OUT / "runs" / ROW).glob(f"{t}.seed*.json")),
            key=lambda r: r["seed"],
        )
        gains = [r["source_value"]["gain"] for r in recs]
        rows.append({"task": t, "seeds": [
            {"seed": r["seed"], "gain": r["source_value"]["gain"], "gain_se": r["source_value"]["gain_se"],
             "dev": r["dev"]["accuracy"], "best_step": r["best_step"], "seconds": r["seconds"]} for r in recs],
            "mean": statistics.mean(gains), "sd": statistics.stdev(gains) if len(gains) > 1 else None})  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seeds.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| prefix | gain seed " + " / ".join(str(s["seed"]) for s in rows[0]["seeds"]) + " (pt ± paired SE)"
             " | mean ± SD over seeds | best step | seconds |", "|---|---|---:|---|---|"]  # fmt: skip
    for r in rows:
        gains = " / ".join(_pm(s["gain"], s["gain_se"]) for s in r["seeds"])
        sd = "" if r["sd"] is None else f" ± {100 * r['sd']:.2f}"
        steps = " / ".join(str(s["best_step"]) for s in r["seeds"])
        secs = " / ".join(f"{s['seconds']:.0f}" for s in r["seeds"])
        lines.append(f"| {r['task']} | {gains} | {100 * r['mean']:+.2f}{sd} | {steps} | {secs} |")
    (OUT / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _members(names: list[str]) -> list[tuple[str, str]]:
    """(row folder, file stem) of each prefix's target vectors, in the served order (names sorted)."""
    out = []
    for n in sorted(names):
        if not all((TVEC / ROW / f"{n}.seed0.{t}.npy").is_file() for t in TARGETS):
            raise FileNotFoundError(
                f"target vectors of {n} missing: run python -m service.method.experiments targets --rows {ROW}"
            )
        out.append((ROW, f"{n}.seed0"))
    return out


def transfer(names: list[str]) -> None:
    """Per target: base, the five-prefix concat, the full default concat (base first, names sorted),
    the full concat without base, and each new prefix alone; test gains with paired SE and CV gains."""
    labels = target_labels()
    new = [n for n in names if n not in OLD]
    rep: dict[str, Any] = {"prefixes": sorted(names), "old": OLD, "new": sorted(new)}
    rep["default"] = measure_transfer(labels, _members(names), with_base=True)
    rep["old5"] = measure_transfer(labels, _members(OLD), with_base=True, float_only=True)
    rep["default_without_base"] = measure_transfer(labels, _members(names), with_base=False, float_only=True)
    rep["new_only"] = measure_transfer(labels, _members(new), with_base=True, float_only=True)
    rep["single"] = {
        n: measure_transfer(labels, _members([n]), with_base=False, float_only=True) for n in sorted(names)
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "transfer.json").write_text(json.dumps(rep, indent=2) + "\n")
    (OUT / "transfer.md").write_text(transfer_markdown(rep, list(TARGETS)))
    log(f"wrote {OUT / 'transfer.md'}")


def _pm(x: float, se: float) -> str:
    return f"{100 * x:+.1f} ± {100 * se:.1f}"


def transfer_markdown(rep: dict[str, Any], targets: list[str]) -> str:
    n = len(rep["prefixes"])
    rows = [
        (f"default concat: base + {n} prefixes", rep["default"]),
        (f"{n} prefixes without base", rep["default_without_base"]),
        ("base + the 5 earlier prefixes", rep["old5"]),
        (f"base + the {len(rep['new'])} new prefixes", rep["new_only"]),
    ]
    lines = ["| representation | dim | " + " | ".join(f"{t} (test pt ± SE; CV pt)" for t in targets)
             + " | mean (test; CV) |", "|---|---:|" + "---|" * len(targets) + "---|"]  # fmt: skip
    base = " | ".join(f"{rep['default'][t]['base']['accuracy']:.3f}; CV {rep['default'][t]['base']['cv_accuracy']:.3f}" for t in targets)  # fmt: skip
    lines.append(f"| base (accuracy) | 384 | {base} | |")

    def line(label: str, res: dict[str, Any], enc: str = "float") -> str:
        cells = [
            f"{_pm(res[t][enc]['gain'], res[t][enc]['gain_se'])}; {100 * res[t][enc]['cv_gain']:+.1f}"
            for t in targets
        ]
        mean = statistics.mean(res[t][enc]["gain"] for t in targets)
        cv = statistics.mean(res[t][enc]["cv_gain"] for t in targets)
        return (
            f"| {label} | {res[targets[0]][enc]['dim']} | "
            + " | ".join(cells)
            + f" | {100 * mean:+.2f}; {100 * cv:+.2f} |"
        )

    for label, res in rows:
        lines.append(line(label, res))
    for enc in ("int8", "binary"):
        lines.append(line(f"default concat, {enc}", rep["default"], enc))
    lines += [
        "",
        "| prefix alone (no base) | " + " | ".join(targets) + " | mean |",
        "|---|" + "---|" * (len(targets) + 1),
    ]
    for name, res in rep["single"].items():
        cells = [
            f"{_pm(res[t]['float']['gain'], res[t]['float']['gain_se'])}; {100 * res[t]['float']['cv_gain']:+.1f}"
            for t in targets
        ]
        mean = statistics.mean(res[t]["float"]["gain"] for t in targets)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * mean:+.2f} |")
    return "\n".join(lines) + "\n"


def cost(n_texts: int, repeats: int) -> None:
    """Texts/s of base + every prefix in prefixes/ (the 13-vector request a client gets by naming them
    all) against the default request (the default model of prefixes/models.json), the same full set
    were every S = 3 member at S = 4 (timing only) and base alone, through the served encoder (the
    backend ``auto`` picks), variants interleaved in ONE run after every depth's background export has
    landed; layer-rows per text from each set's depths; the load average before and after."""
    import platform
    from dataclasses import replace

    from service.backend import build_encoder_for
    from service.bench.engine import time_interleaved
    from service.bench.texts import sample_texts
    from service.config import Settings
    from service.engine.bank import PrefixBank
    from service.engine.direct import embed_sync
    from service.engine.prefix import BASE_NAME, base_prefix
    from service.registry.folder import scan_folder
    from service.registry.served import read_served_models

    load0 = os.getloadavg()
    settings = Settings(prefix_dir=ROOT / "prefixes")
    encoder, choice = build_encoder_for(settings)
    loaded, rejected = scan_folder(settings.prefix_dir, encoder.spec, settings.prefix_limits())
    if rejected:
        raise SystemExit(f"rejected prefix files: {[r.reason for r in rejected]}")
    served = read_served_models(settings.prefix_dir)
    if served.default is None:
        raise SystemExit("no default model in prefixes/models.json")
    default = served.models[served.default].names  # what a default request (prefixes: null) computes
    every = [BASE_NAME, *sorted(p.name for p in loaded)]
    # the S = 4 question, timing only: each S = 3 member without its layer-3 rows, acting from layer 4
    # (what the full set would cost were every prefix trained at S = 4)
    deeper = [
        replace(p, name=f"{p.name}.s4", key=p.key[1:], value=p.value[1:], first_layer=p.first_layer + 1)
        if p.first_layer == 3
        else p
        for p in loaded
    ]
    bank = PrefixBank.build(
        [*loaded, *(p for p in deeper if p.name.endswith(".s4"))], base=base_prefix(encoder.spec)
    )
    variants = {
        f"base + all {len(every) - 1} prefixes": every,
        f"base + {len(default) - 1} prefixes (default)": default,
        f"base + all {len(every) - 1}, S = 3 members at S = 4 (timing only)": [
            BASE_NAME,
            *(p.name for p in deeper),
        ],
        "base alone": [BASE_NAME],
    }
    texts = sample_texts(n_texts)
    layers = encoder.spec.num_layers

    def layer_rows(names: list[str]) -> int:
        """Per text, what the engine's calls compute once every depth is exported: each call's trunk
        to its fan-out depth, then each of its members from there (``Encoder.groups``)."""
        groups = encoder.groups(bank, bank.indices(names))
        return sum(g.fan_out + len(g.slots) * (layers - g.fan_out) for g in groups)

    def call(names: list[str]) -> Callable[[], object]:
        return lambda: embed_sync(encoder, bank, names, texts)

    for names in variants.values():
        embed_sync(encoder, bank, names, texts[:2])  # starts each depth's background export
    encoder.wait_for_exports()  # else a new depth times the shallower graph it falls back to
    secs = time_interleaved({k: call(v) for k, v in variants.items()}, repeats)
    rates: dict[str, dict[str, Any]] = {
        k: {"names": v, "vectors": len(v), "dims": 384 * len(v), "layer_rows_per_text": layer_rows(v),
            "median_s": secs[k], "texts_per_s": n_texts / secs[k]} for k, v in variants.items()
    }  # fmt: skip
    ref = rates[f"base + {len(default) - 1} prefixes (default)"]["texts_per_s"]
    for v in rates.values():
        v["rate_vs_default"] = v["texts_per_s"] / ref
    res = {
        "backend": str(choice), "n_texts": n_texts, "repeats": repeats, "machine": platform.platform(),
        "exported_depths": getattr(encoder, "exported_depths", None),
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "variants": rates,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cost.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


def served(file: Path, task: str, n_texts: int, other: str) -> None:
    """The prefix in ``file`` served by the engine (torch and onnx, one call together with base and
    the shipped ``other``, so a prefix of another depth shares the call: mixed depths) against the
    training path (the trunk cache + top layers that its source value was measured on), over the
    first ``n_texts`` texts of ``task``'s test split (read, not chosen on); max |difference|."""
    from service.backend import build_encoder_for
    from service.config import Settings
    from service.engine.bank import PrefixBank
    from service.engine.direct import embed_sync
    from service.engine.prefix import BASE_NAME, base_prefix
    from service.method.experiments.rows import cfg_for, source_splits, study
    from service.method.prefix_io import load_prefixes
    from service.method.trunk import build_trunk_cache, pooled_all

    backbone = study().load()
    prefix, second = load_prefixes([file, ROOT / "prefixes" / f"{other}.safetensors"], backbone.spec)
    cfg = cfg_for(str(prefix.metadata.get("experiment_row", ROW)), 0, task)
    texts = source_splits(task, cfg)[2].texts[:n_texts]
    cache = build_trunk_cache(backbone, texts, None, sorted({prefix.first_layer, 0}), cfg.max_length)
    trunk = pooled_all(backbone, cache, prefix.first_layer, prefix.key, prefix.value).numpy()
    res: dict[str, Any] = {"file": str(file), "first_layer": prefix.first_layer, "n_texts": len(texts),
                           "together_with": f"{other} (first_layer {second.first_layer})"}  # fmt: skip
    for backend in ("torch", "onnx"):
        encoder, _ = build_encoder_for(Settings(prefix_dir=ROOT / "prefixes", backend=backend))
        bank = PrefixBank.build([prefix, second], base=base_prefix(encoder.spec))
        names = [BASE_NAME, prefix.name, second.name]
        embed_sync(encoder, bank, names, texts[:2], max_tokens=cfg.max_length)
        encoder.wait_for_exports()  # the prefix's own depth, not the shallower graph it falls back to
        vec, _ = embed_sync(encoder, bank, names, texts, max_tokens=cfg.max_length)
        res[backend] = {
            "prefix_max_abs_diff": float(abs(vec[:, 1] - trunk).max()),
            "base_max_abs_diff": float(abs(vec[:, 0] - cache.base.numpy()).max()),
            "prefix_vs_base_max_abs": float(abs(vec[:, 1] - vec[:, 0]).max()),
        }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"served.{prefix.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ship")
    s.add_argument("--tasks", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--row", default=ROW, help="the recipe row (default: the shipped s3full-cos)")
    sd = sub.add_parser("seeds")
    sd.add_argument("--tasks", required=True)
    t = sub.add_parser("transfer")
    t.add_argument("--prefixes", default="", help="comma-separated (default: every prefix in prefixes/)")
    c = sub.add_parser("cost")
    c.add_argument("--texts", type=int, default=64)
    c.add_argument("--repeats", type=int, default=7)
    v = sub.add_parser("served")
    v.add_argument("--file", type=Path, required=True)
    v.add_argument("--task", required=True)
    v.add_argument("--texts", type=int, default=64)
    v.add_argument("--other", default="sentiment", help="a shipped prefix served in the same call")
    args = ap.parse_args()
    if args.cmd == "ship":
        ship(args.tasks.split(","), args.seed, args.row)
    elif args.cmd == "seeds":
        seeds(args.tasks.split(","))
    elif args.cmd == "transfer":
        names = [n for n in args.prefixes.split(",") if n] or sorted(
            p.stem for p in (ROOT / "prefixes").glob("*.safetensors")
        )
        transfer(names)
    elif args.cmd == "served":
        served(args.file, args.task, args.texts, args.other)
    else:
        cost(args.texts, args.repeats)


if __name__ == "__main__":
    main()
