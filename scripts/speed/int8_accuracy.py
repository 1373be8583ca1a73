"""int8 against float32 (issue 27 item 2): the served ONNX encoders, the shipped prefixes, paired SEs.

- Own task: for every shipped prefix, a probe on its own vector (base for comparison) trained on its
  data set's training part (at most N_OWN[0] texts, ``--n-own``) and tested on its fixed 30 % holdout
  (at most N_OWN[1]); int8 minus float32 accuracy with the paired SE over the same test texts.
- Transfer: the three targets (text-genre, tweet-sentiment, email-spam), 1,500 probe-training / 750
  test texts, the served default concat (base + the prefixes of the default model in models.json);
  int8 minus float32, paired. ``--tasks`` runs only the named tasks.
- Per-vector cosine int8 vs float32 (min, mean) on every text encoded, and on the load-test texts.

Every vector comes from the served encoder (``build_onnx_encoder`` with dtype float32 / int8), one
ONNX thread, one call at a time (a background job on a shared machine). Output: JSON + markdown.

    nice -n 5 python scripts/speed/int8_accuracy.py --out results/int8/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from service.backend import build_onnx_encoder  # noqa: E402
from service.bench.texts import sample_texts  # noqa: E402
from service.config import Settings  # noqa: E402
from service.engine.bank import PrefixBank  # noqa: E402
from service.engine.onnx_encoder import OnnxEncoder  # noqa: E402
from service.engine.prefix import base_prefix  # noqa: E402
from service.method.corpora import load_builtin  # noqa: E402
from service.method.data import holdout, subsample  # noqa: E402
from service.method.evaluate import make_target  # noqa: E402
from service.method.features import concat  # noqa: E402
from service.method.probes import paired_gain  # noqa: E402
from service.method.probes import score_probe as probe  # noqa: E402
from service.registry.folder import scan_folder  # noqa: E402
from service.registry.served import read_served_models  # noqa: E402

CS = (0.001, 0.01, 0.1)
N_OWN = (1000, 1000)
N_TARGET = (1500, 750)
SOURCES = {  # shipped prefix -> (built-in data set, max tokens), as they were trained
    "question-type": ("trec", 48),
    "sms-spam": ("sms-spam", 64),
    "sentiment": ("vader-reviews", 64),
    "news-topic": ("bbc-news", 128),
    "editorial-sentiment": ("vader-nyt", 64),
}
TARGETS = {
    "text-genre": ("brown-genre", 64),
    "tweet-sentiment": ("crowdflower-tweets", 64),
    "email-spam": ("spam-assassin", 64),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def vectors(enc: OnnxEncoder, bank: PrefixBank, texts: list[str], max_length: int) -> np.ndarray:
    """[N, P, dim] under every member of ``bank`` (base first), unnormalized, 32 texts per encode."""
    slots = list(range(len(bank)))
    out = []
    for i in range(0, len(texts), 32):
        batch = enc.tokenize(texts[i : i + 32], max_length=max_length, truncate=True)
        out.append(enc.encode(batch, bank, slots))
        enc.wait_for_exports()
    return np.concatenate(out)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def pm(d: float, se: float) -> str:
    return f"{100 * d:+.1f} ± {100 * se:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "prefix-embed" / "onnx")
    ap.add_argument("--parts", default="own,transfer", help="own, transfer or both (comma-separated)")
    ap.add_argument("--n-target", default=f"{N_TARGET[0]},{N_TARGET[1]}", help="probe-training,test texts")
    ap.add_argument("--n-own", default=f"{N_OWN[0]},{N_OWN[1]}", help="own task: probe-training,test texts")
    ap.add_argument("--tasks", default="", help="only these tasks (comma-separated names), default every one")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    chosen = set(filter(None, args.tasks.split(",")))
    unknown = chosen - set(SOURCES) - set(TARGETS)
    if unknown:
        ap.error(f"--tasks: unknown {sorted(unknown)}; choose from {sorted([*SOURCES, *TARGETS])}")
    n_target = tuple(int(x) for x in args.n_target.split(","))
    n_own = tuple(int(x) for x in args.n_own.split(","))
    common = {
        "backend": "onnx",
        "device": "cpu",
        "onnx_cache_dir": args.cache,
        "onnx_threads": 1,
        "onnx_parallel_calls": 1,
    }
    encs = {d: build_onnx_encoder(Settings(dtype=d, **common)) for d in ("float32", "int8")}  # type: ignore[arg-type]
    spec = encs["float32"].spec
    loaded, rejected = scan_folder(Path("prefixes"), spec, Settings().prefix_limits())
    assert not rejected, rejected
    # The default served model (models.json): what `/embed` returns with prefixes: null.
    served = read_served_models(Path("prefixes"))
    default = set(served.models[served.default].names) if served.default else {p.name for p in loaded}
    loaded = [p for p in loaded if p.name in default]
    bank = PrefixBank.build(loaded, base=base_prefix(spec))
    names = list(bank.names)  # base first, then the shipped prefixes by name
    result: dict[str, Any] = {
        "prefixes": {p.name: p.digest for p in loaded},
        "own": {},
        "transfer": {},
        "cosine": {},
    }
    all_cos: list[np.ndarray] = []

    def both(texts: list[str], max_length: int) -> dict[str, np.ndarray]:
        reps = {d: vectors(e, bank, texts, max_length) for d, e in encs.items()}
        all_cos.append(cosines(reps["int8"], reps["float32"]).ravel())
        return reps

    load = both(sample_texts(64), 128)  # the load-test texts of the benchmarks
    c = cosines(load["int8"], load["float32"])
    result["cosine"]["load_texts"] = {
        "min": float(c.min()),
        "mean": float(c.mean()),
        "per_prefix_min": dict(zip(names, map(float, c.min(0)), strict=True)),
    }
    log(f"load texts: cosine min {c.min():.4f} mean {c.mean():.4f}")

    def wanted(task: str) -> bool:
        return not chosen or task in chosen

    for task, (ds, length) in SOURCES.items() if "own" in parts else ():
        if not wanted(task):
            continue
        pool, test = holdout(load_builtin(ds), 0.3)
        train, test = subsample(pool, n_own[0], 0), subsample(test, n_own[1], 0)
        reps = both(train.texts + test.texts, length)
        n = len(train.texts)
        row: dict[str, Any] = {"n_train": n, "n_test": len(test.texts)}
        probes = {}
        for d in ("float32", "int8"):
            for name in ("base", task):
                x = reps[d][:, names.index(name)]
                probes[(d, name)] = probe(x[:n], train.labels, x[n:], test.labels, cs=CS)
                row[f"{d}_{name if name == 'base' else 'prefix'}"] = probes[(d, name)].accuracy
        row["int8_vs_float32"], row["se"] = paired_gain(probes[("int8", task)], probes[("float32", task)])
        row["base_int8_vs_float32"], row["base_se"] = paired_gain(
            probes[("int8", "base")], probes[("float32", "base")]
        )
        result["own"][task] = row
        log(f"own {task}: {row}")

    for task, (ds, length) in TARGETS.items() if "transfer" in parts else ():
        if not wanted(task):
            continue
        t = make_target(load_builtin(ds), test_fraction=0.3, n_train=n_target[0], n_test=n_target[1])
        reps = both(t.train.texts + t.test.texts, length)
        n = len(t.train.texts)
        probes = {}
        for d in ("float32", "int8"):
            full = concat([reps[d][:, j] for j in range(len(names))])
            probes[(d, "concat")] = probe(full[:n], t.train.labels, full[n:], t.test.labels, cs=CS)
            b = reps[d][:, 0]
            probes[(d, "base")] = probe(b[:n], t.train.labels, b[n:], t.test.labels, cs=CS)
        row = {f"{d}_{k}": probes[(d, k)].accuracy for d in ("float32", "int8") for k in ("base", "concat")}
        row["int8_vs_float32"], row["se"] = paired_gain(
            probes[("int8", "concat")], probes[("float32", "concat")]
        )
        row["base_int8_vs_float32"], row["base_se"] = paired_gain(
            probes[("int8", "base")], probes[("float32", "base")]
        )
        result["transfer"][task] = row
        log(f"transfer {task}: {row}")

    every = np.concatenate(all_cos)
    result["cosine"]["all_texts"] = {
        "min": float(every.min()),
        "mean": float(every.mean()),
        "vectors": int(every.size),
    }
    worst = max(abs(r["int8_vs_float32"]) for r in [*result["own"].values(), *result["transfer"].values()])
    result["max_abs_change_points"] = round(100 * worst, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| task | kind | float32 | int8 | int8 - float32 (pt ± paired SE) | base: int8 - float32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for task, r in result["own"].items():
        lines.append(
            f"| {task} | own task (its prefix) | {r['float32_prefix']:.3f} | {r['int8_prefix']:.3f} | {pm(r['int8_vs_float32'], r['se'])} | {pm(r['base_int8_vs_float32'], r['base_se'])} |"
        )
    for task, r in result["transfer"].items():
        lines.append(
            f"| {task} | transfer (base + 5 concat) | {r['float32_concat']:.3f} | {r['int8_concat']:.3f} | {pm(r['int8_vs_float32'], r['se'])} | {pm(r['base_int8_vs_float32'], r['base_se'])} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
