"""``fit-rules``: the input rules of ``fit --select`` on the three target tasks (RESULTS.md, "Fit").

Protocol (never a choice on a test split): the targets' 1,500 probe-training and 750 test texts
(:data:`~service.method.experiments.rows.N_TARGET`), vectors of base and of every prefix of the
folder through the targets' trunk cache (64 tokens, as the transfer tables). The **test** row of a
rule fits on 1,000 of the 1,500 (draw 0) and scores the 750 test texts; the **dev** rows fit on
1,000 drawn with seeds 1..D and score the other 500 of the 1,500. ``auto`` is the rule with the best
mean dev accuracy that meets the targets on dev (within 0.5 points of base and of all everywhere).

``similarity`` is the service's rule (:func:`service.fitting.rules.similarity`, its quick prefix
:mod:`service.fitting.quick`) with ``--quick-steps`` steps, its trunk taken from the targets' cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.backbones.catalog import DEFAULT_BACKBONE
from service.engine.backbone import Backbone
from service.engine.calibration import vectors_identity
from service.engine.prefix import BASE_NAME, LoadedPrefix
from service.fitting.fit import Fitted, select_and_fit
from service.fitting.probe import CrossValidated
from service.fitting.quick import TaskEmbedding
from service.fitting.rules import BEST_OF
from service.fitting.sources import Evaluator, Sources, paired_se
from service.method.experiments.rows import TARGETS, Study, log, study
from service.method.experiments.targets import _target_cache, target_labels
from service.method.prefix_io import load_prefixes
from service.method.trunk import TrunkCache, pooled_all

OUT = Path("results/fit")
BY_TENSORS = "by-tensors"  # under a study's target vectors, keyed by what decides the vectors
N_FIT = 1000
RULES = ("base", "all", "greedy", "weighted", "stacked", "best-cv", "similarity")


def tensors_key(prefix: LoadedPrefix) -> str:
    """sha256 of a prefix's depth and K/V tensors: all its vectors depend on (the file's digest also
    covers its metadata, which a re-calibration changes)."""
    h = hashlib.sha256(f"{prefix.first_layer}:{tuple(prefix.key.shape)}:{prefix.key.dtype}".encode())
    for t in (prefix.key, prefix.value):
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def rules_out(st: Study) -> Path:
    """Where the rules' table goes: results/fit, another backbone NAME's under results/fit/NAME."""
    return OUT if st.model == DEFAULT_BACKBONE else OUT / st.model


def _row_vectors(st: Study, backbone: Backbone, prefix: LoadedPrefix, target: str) -> Path | None:
    """The ``targets`` step's vectors of the experiment row this file was shipped from, when that
    row's file has the same tensors (a calibrated copy has another digest, the same vectors)."""
    row, seed = prefix.metadata.get("experiment_row"), prefix.metadata.get("init", {}).get("seed")
    source = st.prefix_out / str(row) / f"{prefix.name}.seed{seed}.safetensors"
    found = st.tvec / str(row) / f"{source.stem}.{target}.npy"
    if row is None or not source.is_file() or not found.is_file():
        return None
    (trained,) = load_prefixes([source], backbone.spec)
    return found if vectors_identity(trained) == vectors_identity(prefix) else None


def prefix_vectors(
    backbone: Backbone, caches: dict[str, TrunkCache], prefix: LoadedPrefix, st: Study
) -> dict[str, np.ndarray]:
    """{target: [1500 + 750, dim]} of ``prefix`` (cached by :func:`tensors_key`)."""
    out = {}
    key = tensors_key(prefix)
    for target, cache in caches.items():
        f = st.tvec / BY_TENSORS / f"{key}.{target}.npy"
        if not f.is_file():
            f = _row_vectors(st, backbone, prefix, target) or f
        if not f.is_file():
            t0 = time.perf_counter()
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, pooled_all(backbone, cache, prefix.first_layer, prefix.key, prefix.value).numpy())
            log(f"{prefix.name} on {target}: {time.perf_counter() - t0:.0f}s")
        out[target] = np.load(f)
    return out


@dataclass
class TimedEvaluator(Evaluator):
    """An evaluator shared by every rule on one draw, that keeps the seconds of each CV search: a
    rule's own cost is its wall time plus the searches it took from the cache (:meth:`reused`)."""

    seconds: dict[tuple[Any, ...], float] = field(default_factory=dict)
    touched: set[tuple[Any, ...]] = field(default_factory=set)

    def cv(self, names: Sequence[str], weights: Sequence[float] | None = None) -> CrossValidated:
        key = (tuple(names), None if weights is None else tuple(weights))
        if key in self.seconds:
            self.touched.add(key)
            return super().cv(names, weights)
        t0 = time.perf_counter()
        out = super().cv(names, weights)
        self.seconds[key] = time.perf_counter() - t0
        return out

    def reused(self) -> float:
        """Seconds of the cached searches the last rule used (since the previous call)."""
        total = sum(self.seconds[k] for k in self.touched)
        self.touched = set()
        return total


def _predict(fitted: Fitted, src: Sources) -> np.ndarray:
    z = fitted.model.logits(src.features(fitted.inputs))
    idx = (z[:, 0] > 0).astype(int) if z.shape[1] == 1 else z.argmax(1)
    return np.asarray(fitted.model.labels)[idx]


def run_rules(
    prefix_dir: Path,
    rules: list[str],
    draws: int,
    quick_steps: int,
    threads: int,
    only: list[str] | None = None,
    st: Study | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Every rule on every target: test (draw 0) and dev (draws 1..``draws``) rows, written to
    results/fit/rules.json (or ``out``/rules.json: another source set's record beside it) as they
    come (a rerun skips the rows it has); the sources are the folder's prefixes at its shallowest
    depth (MiniLM's 3, mpnet's 8), over that depth's target trunk."""
    torch.set_num_threads(threads)
    st = st or study()
    backbone = st.load()
    loaded = load_prefixes(sorted(Path(prefix_dir).glob("*.safetensors")), backbone.spec)
    depth = min((p.first_layer for p in loaded), default=3)
    caches = _target_cache(backbone, depth, st)
    prefixes = {
        p.name: p
        for p in loaded
        if p.first_layer == depth and not p.position_shift and (not only or p.name in only)
    }
    names = (BASE_NAME, *sorted(prefixes))
    vectors = {n: prefix_vectors(backbone, caches, prefixes[n], st) for n in sorted(prefixes)}
    labels = target_labels()
    out_dir = out or rules_out(st)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / "rules.json"
    doc: dict[str, Any] = json.loads(out_file.read_text()) if out_file.is_file() else {}
    doc["prefixes"] = {n: prefixes[n].digest for n in sorted(prefixes)}
    rows: list[dict[str, Any]] = doc.setdefault("rows", [])
    have = {(r["target"], r["draw"], r["rule"]) for r in rows if r["prefixes"] == list(names)}
    per_target = {}
    for target in TARGETS:
        y_train, y_test = labels[target]
        vecs = [caches[target].base.numpy(), *(vectors[n][target] for n in sorted(prefixes))]
        per_target[target] = (np.array(y_train + y_test), np.stack(vecs, axis=1), len(y_train))
    digests = (BASE_NAME, *(prefixes[n].digest for n in sorted(prefixes)))
    # the test row first (what RESULTS.md reports), then the dev draws (what ``auto`` is chosen on)
    for draw in range(draws + 1):
        # the fewest classes first (the cheapest fits): a cut-short run has whole targets
        for target, (y, stacked, n_train) in sorted(per_target.items(), key=lambda t: len(set(t[1][0]))):
            perm = np.random.default_rng(draw).permutation(n_train)
            fit_idx = perm[:N_FIT]
            eval_idx = np.arange(n_train, len(y)) if draw == 0 else perm[N_FIT:]
            src = Sources(names, digests, stacked[fit_idx], tuple(y[fit_idx]))
            held = Sources(names, digests, stacked[eval_idx], tuple(y[eval_idx]))
            # similarity's quick prefix over the fit texts' cached trunk (their indices are its keys)
            embedding = TaskEmbedding(
                backbone,
                tuple(str(i) for i in fit_idx),
                tuple(y[fit_idx]),
                prefixes,
                steps=quick_steps,
                cache=caches[target].rows(fit_idx.tolist()),
            )
            shared = TimedEvaluator(src, task_embedding=embedding)
            for rule in rules:
                if (target, draw, rule) in have:
                    continue
                shared.reused()  # counts from here
                t0 = time.perf_counter()
                fitted = select_and_fit(src, rule, evaluator=shared)
                extra = float(fitted.choice.detail.get("quick_seconds", 0.0))
                seconds = time.perf_counter() - t0 + shared.reused()
                correct = _predict(fitted, held) == y[eval_idx]
                rows.append(
                    {
                        "target": target,
                        "draw": draw,
                        "split": "test" if draw == 0 else "dev",
                        "rule": rule,
                        "prefixes": list(names),
                        "accuracy": float(correct.mean()),
                        "correct": correct.astype(int).tolist(),
                        "n": int(len(correct)),
                        "seconds": seconds,
                        "quick_seconds": extra,
                        **{k: v for k, v in fitted.summary().items() if k != "seconds"},
                    }
                )
                log(f"{target} draw {draw} {rule}: {correct.mean():.4f} ({seconds:.0f}s) {fitted.inputs}")
                out_file.write_text(json.dumps(doc, indent=1))
    return doc


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _kept(row: dict[str, Any]) -> str:
    chosen = f"{row['detail']['chosen']}: " if row["rule"] == "best-cv" else ""
    if row["weights"]:
        return chosen + ", ".join(f"{n} {w:.2f}" for n, w in row["weights"].items())
    inputs = row["inputs"]
    if row["stacked"] or row["rule"] == "all" or len(inputs) == len(row["prefixes"]):
        return chosen + f"all {len(inputs)}"
    return chosen + ", ".join(inputs)


def derived_best_cv(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``best-cv`` rows from the rows of its candidates (:data:`~service.fitting.rules.BEST_OF`) where a
    run measured them but not it: the rule keeps the candidate of the best CV accuracy (first of
    equals), and each candidate's fit does not depend on the others (deterministic, the CV searches
    only shared), so its predictions are that row's. Its seconds: the candidates' summed (an upper
    bound: run together, they share the CV searches of the single sources)."""
    by = {(r["target"], r["draw"], r["rule"]): r for r in rows}
    out = []
    for target, draw in sorted({(r["target"], r["draw"]) for r in rows}):
        cands = [by.get((target, draw, rule)) for rule in BEST_OF]
        if (target, draw, "best-cv") in by or any(c is None for c in cands):
            continue
        chosen = max((c for c in cands if c is not None), key=lambda c: c["cv_accuracy"])
        detail = {"chosen": chosen["rule"], "cv": {c["rule"]: c["cv_accuracy"] for c in cands if c}}
        seconds = sum(c["seconds"] for c in cands if c)
        out.append({**chosen, "rule": "best-cv", "seconds": seconds, "derived": True, "detail": detail})
    return out


def _dev_margin(by: dict[tuple[str, int], dict[str, Any]], rule: str) -> float:
    """The rule's mean dev accuracy minus the better of base's and all's, in points (NaN: no dev rows)."""
    dev = {d: r["accuracy"] for (k, d), r in by.items() if k == rule and d > 0}
    refs = [_mean([by[ref, d]["accuracy"] for d in dev if (ref, d) in by]) for ref in ("base", "all")]
    return (_mean(list(dev.values())) - max(refs)) * 100 if dev else math.nan


def auto_line(means: dict[str, dict[str, list[float]]]) -> str:
    """Which rule ``auto`` should be: the best mean dev accuracy among the rules within 0.5 points of
    base and of all on every target's dev draws (never a test number); without dev rows, the best
    mean CV accuracy on the fit examples (optimistic for the rules that choose by it: said so)."""
    have_dev = all(not math.isnan(x) for m in means.values() for x in m["dev"]) and any(
        m["dev"] for m in means.values()
    )
    if have_dev:
        ok = {r: m for r, m in means.items() if min(m["dev_margin"], default=math.nan) >= -0.5}
        pool = ok or means
        best = max(pool, key=lambda r: _mean(pool[r]["dev"]))
        return f"auto (chosen on dev): **{best}** (mean dev {_mean(means[best]['dev']):.4f}; rules within 0.5 pt of base and all on every target's dev: {', '.join(ok) or 'none'})"
    best = max(means, key=lambda r: _mean(means[r]["cv"]))
    return f"auto (no dev rows; chosen on the fit's CV accuracy, optimistic for selecting rules): **{best}**"


def report_rules(st: Study | None = None, out: Path | None = None) -> str:
    """results/fit/rules.md (another backbone's under results/fit/NAME; or ``out``/rules.md) from
    rules.json beside it: per target, each rule's test accuracy with paired SEs against base and all,
    its mean dev accuracy, what it kept, and seconds; then the means."""
    out_dir = out or rules_out(st or study())
    doc = json.loads((out_dir / "rules.json").read_text())
    names = [BASE_NAME, *doc["prefixes"]]
    rows = [r for r in doc["rows"] if r["prefixes"] == names]
    rows += derived_best_cv(rows)
    rules = [r for r in RULES if any(x["rule"] == r for x in rows)]
    lines = [
        f"Sources: base + {len(names) - 1} prefixes ({', '.join(names[1:])}). Test: fit on 1,000, score the "
        "750 test texts; dev: mean over the dev draws (1,000 fit / 500 held out of the 1,500).",
        "",
    ]
    means: dict[str, dict[str, list[float]]] = {
        r: {"test": [], "dev": [], "vs_base": [], "vs_all": [], "cv": [], "dev_margin": []} for r in rules
    }
    for target in TARGETS:
        by = {(r["rule"], r["draw"]): r for r in rows if r["target"] == target}
        if ("base", 0) not in by or ("all", 0) not in by:
            continue
        base_c, all_c = np.array(by["base", 0]["correct"]), np.array(by["all", 0]["correct"])
        lines += [
            f"**{target}** (test {by['base', 0]['n']} texts)",
            "",
            "| rule | test acc | vs base (pt ± SE) | vs all (pt ± SE) | dev acc | CV acc | kept | seconds |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for rule in rules:
            test = by.get((rule, 0))
            if test is None:
                continue
            c = np.array(test["correct"])
            dev = [r["accuracy"] for (k, d), r in by.items() if k == rule and d > 0]
            vb, va = (c - base_c).mean() * 100, (c - all_c).mean() * 100
            means[rule]["test"].append(test["accuracy"])
            means[rule]["dev"].append(_mean(dev))
            means[rule]["vs_base"].append(vb)
            means[rule]["vs_all"].append(va)
            means[rule]["cv"].append(test["cv_accuracy"])
            means[rule]["dev_margin"].append(_dev_margin(by, rule))
            secs = test["seconds"]
            lines.append(
                f"| {rule} | {test['accuracy']:.4f} | {vb:+.1f} ± {paired_se(c, base_c) * 100:.1f} | "
                f"{va:+.1f} ± {paired_se(c, all_c) * 100:.1f} | {_mean(dev):.4f} | {test['cv_accuracy']:.4f} | "
                f"{_kept(test)} | {secs:.0f}"
                + (f" (of which {test['quick_seconds']:.0f} quick prefix)" if rule == "similarity" else "")
                + " |"
            )
        lines.append("")
    lines += [
        "**Mean over the targets**",
        "",
        "| rule | test acc | vs base (pt) | vs all (pt) | dev acc | worst dev margin (pt) | CV acc |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rule in rules:
        m = means[rule]
        lines.append(
            f"| {rule} | {_mean(m['test']):.4f} | {_mean(m['vs_base']):+.2f} | {_mean(m['vs_all']):+.2f} | "
            f"{_mean(m['dev']):.4f} | {min(m['dev_margin'], default=math.nan):+.2f} | {_mean(m['cv']):.4f} |"
        )
    lines += ["", auto_line(means)]
    text = "\n".join(lines) + "\n"
    (out_dir / "rules.md").write_text(text)
    return text
