"""Shared-trunk prefixes: the depth table (issue 10 item 6), the recipe table and the shipped prefixes
(issue 11 items 2-4). One process per source task; the task's texts (and, for rows with transfer,
the three targets' texts) run through the frozen trunk ONCE, every row trains over that cache.

    python scripts/method/trunk_experiments.py bench                       # seconds/step vs S
    python scripts/method/trunk_experiments.py run --task question-type --rows depth0,depth3,...
    python scripts/method/trunk_experiments.py report                      # tables -> results/trunk/

Each run writes results/trunk/runs/<row>/<task>.seed<k>.json (dev metrics, source value, seconds)
and the prefix file results/prefixes/trunk/<row>/<task>.seed<k>.safetensors; rows with transfer
also write the prefix's vectors of the targets' texts to .cache/trunk/. Choices between rows are made
on validation scores (dev split, probe CV), never on a test split.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.config import default_model_path  # noqa: E402
from service.engine.backbone import Backbone, load_backbone  # noqa: E402
from service.method.corpora import load_builtin  # noqa: E402
from service.method.data import TaskData, holdout, split, subsample  # noqa: E402
from service.method.evaluate import make_target  # noqa: E402
from service.method.measures import concat, encodings, paired_gain, probe  # noqa: E402
from service.method.prefix_io import write_native  # noqa: E402
from service.method.trunk import TrunkCache, build_trunk_cache, pooled_all, top_pooled  # noqa: E402
from service.method.trunk_train import TrunkTrainConfig, train_trunk_prefix  # noqa: E402

OUT = ROOT / "results" / "trunk"
PREFIX_OUT = ROOT / "results" / "prefixes" / "trunk"
VEC = ROOT / ".cache" / "trunk"
CS = (0.001, 0.01, 0.1)

# source task -> (built-in data set, max tokens)
SOURCES = {
    "question-type": ("trec", 48),
    "sms-spam": ("sms-spam", 64),
    "sentiment": ("vader-reviews", 64),
    "news-topic": ("bbc-news", 128),
    "editorial-sentiment": ("vader-nyt", 64),
    # issue 24: sets kept in public repositories (service/method/repo_corpora.py, docs/DATA.md)
    "tweet-emotion": ("tweeteval-emotion", 64),
    "tweet-irony": ("tweeteval-irony", 64),
    "tweet-offensive": ("tweeteval-offensive", 64),
    "tweet-hate": ("tweeteval-hate", 64),
    "subjectivity": ("subjectivity", 64),
    "review-polarity": ("review-polarity", 64),
    "opinion-polarity": ("opinion-polarity", 32),
    "banking-intent": ("banking77", 48),
    "assistant-intent": ("clinc150", 48),
    "acceptability": ("cola", 48),
}
N_TARGET = (1500, 750)  # probe-training / test texts per target (the older sections' sizes)
# the targets' vectors (base and per prefix) for these sizes; the 400/200 run's are in VEC itself
TVEC = VEC / f"targets{N_TARGET[0]}x{N_TARGET[1]}"
TARGETS = {
    "text-genre": ("brown-genre", 64),
    "tweet-sentiment": ("crowdflower-tweets", 64),
    "email-spam": ("spam-assassin", 64),
}

BASE = TrunkTrainConfig(
    first_layer=4,
    prefix_len=16,
    batch_size=16,
    lr=1e-2,
    head_lr=5e-3,
    max_steps=75,
    eval_every=25,
    patience=4,
)
# row -> (config changes, max examples of the pool (train + dev), transfer measured?)
ROWS: dict[str, tuple[dict[str, Any], int, bool]] = {
    **{f"depth{s}": ({"first_layer": s}, 2000, s == 4) for s in (0, 3, 4, 5)},
    "tokens": ({"init": "tokens"}, 2000, True),
    "projection": ({"projection": True}, 2000, False),
    "preserve0.1": ({"preserve": 0.1}, 2000, True),
    "preserve1": ({"preserve": 1.0}, 2000, True),
    "cosine": ({"schedule": "cosine"}, 2000, False),
    "fulldata": ({"max_steps": 400}, 8000, False),
    # S = 3 (the depth table's choice): projection on the depth3 data/steps; then the full training
    # part of each data set (pool <= 8,000), 300 steps, dev every 50, constant or cosine lr
    "s3proj": ({"first_layer": 3, "projection": True}, 2000, False),
    "s3full": ({"first_layer": 3, "max_steps": 300, "eval_every": 50}, 8000, True),
    "s3full-cos": ({"first_layer": 3, "max_steps": 300, "eval_every": 50, "schedule": "cosine"}, 8000, True),
}
LEGACY_DEPTHS = (0, 3, 4, 5)  # the trunk depths cached for the 2,000-example pool (the depth table)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def source_splits(task: str, max_pool: int, seed: int) -> tuple[TaskData, TaskData, TaskData]:
    """(train, dev, test): test = the fixed 30 % holdout (by document, at most 1,000), then the pool
    subsampled to ``max_pool`` and split 85/15 by document."""
    data = load_builtin(SOURCES[task][0])
    data = replace(data, name=task)
    pool, test = holdout(data, 0.3)
    test = subsample(test, 1000, 0)
    pool = subsample(pool, max_pool, seed)
    train, dev = split(pool, 0.15, seed)
    return train, dev, test


def cfg_for(row: str, seed: int, task: str) -> tuple[TrunkTrainConfig, int, bool]:
    changes, pool, transfer = ROWS[row]
    return replace(BASE, seed=seed, max_length=SOURCES[task][1], **changes), pool, transfer


def shared_cache(
    backbone: Backbone, task: str, pool: int, seed: int, length: int, depths: tuple[int, ...] = LEGACY_DEPTHS
) -> tuple[TaskData, TaskData, TaskData, TrunkCache, TrunkCache, TrunkCache]:
    """The task's splits and their trunk caches at ``depths``, built once and kept on disk so that
    several processes of one task share them (one builds, the others wait for the file)."""
    train, dev, test = source_splits(task, pool, seed)
    tag = "" if depths == LEGACY_DEPTHS else ".S" + "-".join(map(str, depths))
    file = VEC / "states" / f"{task}.pool{pool}.seed{seed}{tag}.pt"
    lock = file.with_suffix(".lock")
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.touch(exist_ok=False)
        mine = True
    except FileExistsError:
        mine = False
    if mine and not file.is_file():
        t0 = time.perf_counter()
        cs = [build_trunk_cache(backbone, d.texts, d.pairs, depths, length) for d in (train, dev, test)]
        torch.save([(c.states, c.base) for c in cs], file.with_suffix(".tmp"))
        file.with_suffix(".tmp").rename(file)
        log(
            f"{task}: trunk cache of {len(train)}+{len(dev)}+{len(test)} texts in {time.perf_counter() - t0:.0f}s"
        )
    deadline = time.time() + 3600
    while not file.is_file():
        if time.time() > deadline:
            raise TimeoutError(f"{file} did not appear")
        time.sleep(10)
    loaded = torch.load(file)
    c = [TrunkCache(st, b) for st, b in loaded]
    return train, dev, test, c[0], c[1], c[2]


def run(task: str, rows: list[str], seeds: list[int], threads: int) -> None:
    torch.set_num_threads(threads)
    backbone = load_backbone(default_model_path(), device="cpu", dtype="float32")
    length = SOURCES[task][1]
    caches: dict[
        tuple[int, int], tuple[TaskData, TaskData, TaskData, TrunkCache, TrunkCache, TrunkCache]
    ] = {}
    base_probes: dict[tuple[int, int], Any] = {}
    for seed in seeds:
        for row in rows:
            cfg, pool, _ = cfg_for(row, seed, task)
            done = OUT / "runs" / row / f"{task}.seed{seed}.json"
            if done.is_file():
                log(f"{task} {row} seed {seed}: done already")
                continue
            key = (pool, seed)
            if key not in caches:  # one pool size at a time; the 2,000 pool keeps the depth table's depths
                depths = (
                    LEGACY_DEPTHS
                    if pool == 2000
                    else tuple(
                        sorted({cfg_for(r, seed, task)[0].first_layer for r in rows if ROWS[r][1] == pool})
                    )
                )
                caches = {key: shared_cache(backbone, task, pool, seed, length, depths)}
            train, dev, test, c_train, c_dev, c_test = caches[key]
            log(f"{task} {row} seed {seed}: training ({cfg})")
            res = train_trunk_prefix(
                backbone, train, dev, cfg, train_cache=c_train, dev_cache=c_dev, log=None
            )
            s = cfg.first_layer
            file = PREFIX_OUT / row / f"{task}.seed{seed}.safetensors"
            vec_train = pooled_all(backbone, c_train, s, res.key, res.value).numpy()
            vec_test = pooled_all(backbone, c_test, s, res.key, res.value).numpy()
            if key not in base_probes:  # the same base probe for every row of this pool
                base_probes[key] = probe(
                    c_train.base.numpy(), train.labels, c_test.base.numpy(), test.labels, cs=CS
                )
            base_probe = base_probes[key]
            pref_probe = probe(vec_train, train.labels, vec_test, test.labels, cs=CS)
            gain, se = paired_gain(pref_probe, base_probe)
            value = {
                "n_probe_train": len(train), "n_test": len(test),
                "base": {"accuracy": base_probe.accuracy, "cv_accuracy": base_probe.cv_accuracy},
                "prefix": {"accuracy": pref_probe.accuracy, "cv_accuracy": pref_probe.cv_accuracy},
                "gain": gain, "gain_se": se,
            }  # fmt: skip
            meta = res.metadata | {"source_value": value, "experiment_row": row}
            write_native(file, res.key, res.value, meta, backbone.spec)
            log(f"{task} {row} seed {seed}: dev {res.metadata['dev_metrics']['accuracy']:.3f} "
                f"test prefix {pref_probe.accuracy:.3f} base {base_probe.accuracy:.3f} ({gain:+.3f} +- {se:.3f})")  # fmt: skip
            record = {
                "task": task, "row": row, "seed": seed, "config": asdict(cfg), "pool": pool,
                "dev": res.metadata["dev_metrics"], "steps": res.metadata["training"]["steps_run"],
                "best_step": res.metadata["training"]["best_step"], "seconds": res.metadata["training"]["seconds"],
                "seconds_per_step": res.seconds_per_step, "source_value": value, "file": str(file.relative_to(ROOT)),
                "n_train": len(train), "n_dev": len(dev),
            }  # fmt: skip
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(record, indent=2) + "\n")


def target_vectors(
    threads: int, until: float, rows: list[str] | None = None, wait: bool = False, depth: int = 3
) -> None:
    """Vectors of the three targets' texts (:data:`N_TARGET` probe-training + test texts each) under
    base and under every prefix of ``rows`` (default: the rows with transfer). With ``wait``, keeps
    polling for new files until ``until`` (unix time); otherwise returns when none is left. The
    targets' trunk runs once per depth (cached on disk, shared by parallel workers, which claim
    files)."""
    from service.method.prefix_io import load_prefixes

    torch.set_num_threads(threads)
    backbone = load_backbone(default_model_path(), device="cpu", dtype="float32")
    caches: dict[int, dict[str, TrunkCache]] = {}

    def target_cache(s: int) -> dict[str, TrunkCache]:
        if s in caches:
            return caches[s]
        file = VEC / "states" / f"targets{N_TARGET[0]}x{N_TARGET[1]}.S{s}.pt"
        lock = file.with_suffix(".lock")
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.touch(exist_ok=False)
            if not file.is_file():
                built = {}
                for name, (ds, length) in TARGETS.items():
                    t = make_target(
                        load_builtin(ds), test_fraction=0.3, n_train=N_TARGET[0], n_test=N_TARGET[1]
                    )
                    t0 = time.perf_counter()
                    built[name] = build_trunk_cache(backbone, t.train.texts + t.test.texts, None, [s], length)
                    TVEC.mkdir(parents=True, exist_ok=True)
                    np.save(TVEC / f"base.{name}.npy", built[name].base.numpy())
                    log(f"{name}: trunk at S={s} in {time.perf_counter() - t0:.0f}s")
                torch.save({n: (c.states, c.base) for n, c in built.items()}, file.with_suffix(".tmp"))
                file.with_suffix(".tmp").rename(file)
        except FileExistsError:
            while not file.is_file():
                time.sleep(10)
        caches[s] = {n: TrunkCache(st, b) for n, (st, b) in torch.load(file).items()}
        return caches[s]

    target_cache(depth)  # build the targets' trunk now, while the rows train
    rows = rows or [r for r, (_, _, tr) in ROWS.items() if tr]
    while time.time() < until:
        files = [f for row in rows for f in sorted((PREFIX_OUT / row).glob("*.safetensors"))]
        todo = [
            f
            for f in files
            if not all((TVEC / f.parent.name / f"{f.stem}.{t}.npy").is_file() for t in TARGETS)
        ]
        claimed = None
        for f in todo:  # claim a file (workers share the list)
            try:
                (TVEC / "claims").mkdir(parents=True, exist_ok=True)
                (TVEC / "claims" / f"{f.parent.name}.{f.stem}").touch(exist_ok=False)
                claimed = f
                break
            except FileExistsError:
                continue
        if claimed is None:
            if not wait:
                return
            time.sleep(20)
            continue
        f = claimed
        (p,) = load_prefixes([f], backbone.spec)
        if p.position_shift:
            raise ValueError(f"{f}: shifted positions; the cached trunk path is for position_convention none")
        for name, cache in target_cache(p.first_layer).items():
            out = TVEC / f.parent.name / f"{f.stem}.{name}.npy"
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, pooled_all(backbone, cache, p.first_layer, p.key, p.value).numpy())
        log(f"target vectors of {f.parent.name}/{f.stem}")


def _runs() -> list[dict[str, Any]]:
    return [json.loads(f.read_text()) for f in sorted((OUT / "runs").glob("*/*.json"))]


def _target_labels() -> dict[str, tuple[list[str], list[str]]]:
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
        full = concat(([base] if with_base else []) + vecs)
        n = len(y_train)
        base_p = probe(base[:n], y_train, base[n:], y_test, cs=CS)
        res: dict[str, Any] = {
            "base": {"accuracy": base_p.accuracy, "cv_accuracy": base_p.cv_accuracy, "se": base_p.stderr}
        }
        for enc, x in encodings(full).items():
            if float_only and enc != "float":
                continue
            p = probe(x[:n], y_train, x[n:], y_test, cs=CS)
            gain, se = paired_gain(p, base_p)
            res[enc] = {"accuracy": p.accuracy, "cv_accuracy": p.cv_accuracy, "gain": gain, "gain_se": se,
                        "cv_gain": p.cv_accuracy - base_p.cv_accuracy, "dim": int(x.shape[1])}  # fmt: skip
            if enc == "float":
                float_p = p
            else:
                d, dse = paired_gain(p, float_p)
                res[enc] |= {"vs_float": d, "vs_float_se": dse}
        out[name] = res
    return out


def report() -> None:
    runs = _runs()
    by = {(r["row"], r["task"], r["seed"]): r for r in runs}
    labels = _target_labels()
    rows_out: dict[str, Any] = {"runs": runs, "transfer": {}}
    tasks = list(SOURCES)
    for row, (_, _, has_transfer) in ROWS.items():
        if not has_transfer or row == "depth4":  # depth4 = the shipped set: measured by ship
            continue
        seeds = sorted({r["seed"] for r in runs if r["row"] == row})
        for seed in seeds:
            members = [
                (row, f"{t}.seed{seed}")
                for t in tasks
                if (row, t, seed) in by
                and all((TVEC / row / f"{t}.seed{seed}.{n}.npy").is_file() for n in TARGETS)
            ]
            if len(members) < 2:
                continue
            log(f"transfer {row} seed {seed} with {members}")
            rows_out["transfer"][f"{row}.seed{seed}"] = transfer(labels, members) | {
                "members": [m[1] for m in members]
            }
    (OUT / "report.json").write_text(json.dumps(rows_out, indent=2) + "\n")
    (OUT / "report.md").write_text(markdown(rows_out))
    log(f"wrote {OUT / 'report.json'} and report.md")


def _pm(x: float, se: float) -> str:
    return f"{100 * x:+.1f} ± {100 * se:.1f}"


def markdown(rep: dict[str, Any]) -> str:
    runs = rep["runs"]
    layers = 6
    lines = ["## Depth table (same data, 75 steps, seed 0; source-task test split)", ""]
    lines.append(
        "| task | S | dev acc | test acc prefix | test acc base | gain (pt) ± SE | best step | s/step (loaded CPU) |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(
        (r for r in runs if r["row"].startswith("depth") and r["seed"] == 0),
        key=lambda r: (r["task"], r["config"]["first_layer"]),
    ):
        v = r["source_value"]
        lines.append(
            f"| {r['task']} | {r['config']['first_layer']} | {r['dev']['accuracy']:.3f} | {v['prefix']['accuracy']:.3f} | "
            f"{v['base']['accuracy']:.3f} | {_pm(v['gain'], v['gain_se'])} | {r['best_step']} | {r['seconds_per_step']:.2f} |"
        )
    lines += ["", "Compute per text (layer-rows, L = 6): base alone 6; one prefix at S beside base: S + 2(L-S);",
              "base + 4 prefixes: S + 5(L-S) = " + ", ".join(f"S={s}: {s + 5 * (layers - s)}" for s in (0, 3, 4, 5)), ""]  # fmt: skip
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
        cells = []
        tr = rep["transfer"].get(f"{row}.seed0")
        for t in TARGETS:
            if tr and t in tr:
                f = tr[t]["float"]
                cells.append(f"{_pm(f['gain'], f['gain_se'])}; {100 * f['cv_gain']:+.1f}")
            else:
                cells.append("")
        mean = ""
        if tr and all(t in tr for t in TARGETS):
            mean = f"{100 * statistics.mean(tr[t]['float']['gain'] for t in TARGETS):+.1f}; {100 * statistics.mean(tr[t]['float']['cv_gain'] for t in TARGETS):+.1f}"
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
    import shutil

    shipped = []
    for t in tasks:
        rec = json.loads((OUT / "runs" / row / f"{t}.seed{seed}.json").read_text())
        v = rec["source_value"]
        if v["gain"] <= 0:
            log(f"{t}: does not beat base on its own task ({v['gain']:+.3f}); not shipped")
            continue
        shutil.copyfile(ROOT / rec["file"], ROOT / "prefixes" / f"{t}.safetensors")
        shipped.append(rec)
    labels = _target_labels()
    members = sorted((row, f"{r['task']}.seed{seed}") for r in shipped)  # served order: names sorted
    members = [m for m in members if all((TVEC / m[0] / f"{m[1]}.{t}.npy").is_file() for t in TARGETS)]
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
            f"| {r['task']} | {r['n_train']}/{r['n_dev']}/{v['n_test']} | {r['dev']['accuracy']:.3f} | {v['prefix']['accuracy']:.3f} | {v['base']['accuracy']:.3f} | {_pm(v['gain'], v['gain_se'])} |"
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
        reps += [(f"{name.split('.')[0]} alone", single[t], ("float",)) for name, single in rep["single"].items()]  # fmt: skip
        for label, res, encs in reps:
            for enc in encs:
                x = res[enc]
                extra = f" (vs float {_pm(x['vs_float'], x['vs_float_se'])})" if enc != "float" else ""
                lines.append(
                    f"| {t} | {b:.3f} | {label} {enc}{extra} | {x['dim']} | {x['accuracy']:.3f} | {_pm(x['gain'], x['gain_se'])} | {100 * x['cv_gain']:+.1f} |"
                )
    for key in ("concat_with_base", "concat_without_base"):
        g = [rep[key][t]["float"]["gain"] for t in TARGETS]
        cv = [rep[key][t]["float"]["cv_gain"] for t in TARGETS]
        lines.append(
            f"\n{key}: mean target gain {100 * statistics.mean(g):+.2f} pt (test), {100 * statistics.mean(cv):+.2f} pt (CV); min {100 * min(g):+.2f}"
        )
    return "\n".join(lines) + "\n"


def bench(reps: int, threads: int) -> None:
    """Seconds per training step (forward + backward + AdamW) at S = 0, 3, 4, 5 over the cached trunk,
    and at S = 4 with the trunk run (no grad) inside the step: the same batch, interleaved."""
    torch.set_num_threads(threads)
    backbone = load_backbone(default_model_path(), device="cpu", dtype="float32")
    train, _, _ = source_splits("question-type", 2000, 0)
    idx = list(range(16))
    texts = [train.texts[i] for i in idx]
    cache = build_trunk_cache(backbone, texts, None, [0, 3, 4, 5], 48)
    spec = backbone.spec
    times: dict[str, list[float]] = {}
    params = {}
    for s in (0, 3, 4, 5):
        shape = (spec.num_layers - s, spec.num_heads, 16, spec.head_dim)
        params[s] = (
            torch.nn.Parameter(torch.randn(shape) * 0.5),
            torch.nn.Parameter(torch.randn(shape) * 0.5),
        )
    opts = {s: torch.optim.AdamW(list(params[s]), lr=1e-2) for s in params}
    head = torch.nn.Linear(spec.hidden_size, 6)
    y = torch.randint(0, 6, (16,))

    def step(s: int, uncached: bool) -> None:
        if uncached:
            with torch.no_grad():
                c = build_trunk_cache(backbone, texts, None, [s], 48)
            hidden, mask = c.batch(s, idx)
        else:
            hidden, mask = cache.batch(s, idx)
        k, v = params[s]
        loss = torch.nn.functional.cross_entropy(head(top_pooled(backbone, hidden, mask, s, k, v)), y)
        opts[s].zero_grad()
        loss.backward()
        opts[s].step()

    variants = [(f"S={s} cached", s, False) for s in (0, 3, 4, 5)] + [("S=4 trunk in the step", 4, True)]
    for r in range(reps + 2):
        for name, s, unc in variants:
            t0 = time.perf_counter()
            step(s, unc)
            if r >= 2:  # 2 warm-up rounds
                times.setdefault(name, []).append(time.perf_counter() - t0)
    ref = statistics.median(times["S=0 cached"])
    table = {
        n: {"median_s": statistics.median(t), "ratio_to_S0": statistics.median(t) / ref}
        for n, t in times.items()
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_train_step.json").write_text(
        json.dumps(
            {"reps": reps, "threads": threads, "batch": 16, "max_tokens": 48, "steps": table}, indent=2
        )
        + "\n"
    )
    for n, t in table.items():
        log(f"{n}: median {t['median_s'] * 1000:.1f} ms/step, {t['ratio_to_S0']:.2f}x S=0")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--reps", type=int, default=20)
    b.add_argument("--threads", type=int, default=1)
    sub.add_parser("report")
    sp = sub.add_parser("ship")
    sp.add_argument("--row", required=True)
    sp.add_argument("--tasks", default=",".join(SOURCES))
    sp.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("targets")
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--rows", default="", help="comma-separated rows (default: the rows with transfer)")
    v.add_argument("--depth", type=int, default=3, help="the depth whose target trunk is built first")
    v.add_argument("--wait", action="store_true", help="keep polling for new files until --minutes")
    v.add_argument("--minutes", type=float, default=60)
    r = sub.add_parser("run")
    r.add_argument("--task", required=True, choices=sorted(SOURCES))
    r.add_argument("--rows", required=True)
    r.add_argument("--seeds", default="0")
    r.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "bench":
        bench(args.reps, args.threads)
    elif args.cmd == "ship":
        ship(args.row, args.tasks.split(","), args.seed)
    elif args.cmd == "report":
        report()
    elif args.cmd == "targets":
        rows = [r for r in args.rows.split(",") if r]
        target_vectors(args.threads, time.time() + 60 * args.minutes, rows or None, args.wait, args.depth)
    else:
        rows = args.rows.split(",")
        unknown = set(rows) - set(ROWS)
        if unknown:
            raise SystemExit(f"unknown rows {sorted(unknown)}; known {sorted(ROWS)}")
        run(args.task, rows, [int(x) for x in args.seeds.split(",")], args.threads)


if __name__ == "__main__":
    main()
