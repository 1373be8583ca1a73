"""``fit-rules``: the input rules of ``fit --select`` on the three target tasks (RESULTS.md, "Fit").

Protocol (never a choice on a test split): the targets' 1,500 probe-training and 750 test texts
(:data:`~service.method.experiments.rows.N_TARGET`), vectors of base and of every prefix of the
folder through the targets' trunk cache (64 tokens, as the transfer tables). The **test** row of a
rule fits on 1,000 of the 1,500 (draw 0) and scores the 750 test texts; the **dev** rows fit on
1,000 drawn with seeds 1..D and score the other 500 of the 1,500. ``auto`` is the rule with the best
mean dev accuracy that meets the targets on dev (within 0.5 points of base and of all everywhere).

``similarity`` (Zhou et al. 2022, "Efficiently Tuned Parameters are Task Embeddings"): a quick prefix
(the shipped recipe, ``--quick-steps`` steps, the shipped prefixes' seed, so the same recorded start)
trained on the 1,000 examples; the sources ranked by the registry's similarity to it; ``base`` + the
top k, k from :data:`TOP_KS` by CV (one-SE rule toward fewer).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
from service.fitting.rules import Choice, Trial
from service.fitting.sources import Evaluator, Sources, paired_se
from service.method.data import TaskData, split
from service.method.experiments.rows import TARGETS, Study, log, study
from service.method.experiments.targets import _target_cache, target_labels
from service.method.prefix_io import load_prefixes
from service.method.recipe import TrainConfig
from service.method.train import TaskSplit, train_prefix
from service.method.trunk import TrunkCache, pooled_all
from service.registry.similarity import similarity

OUT = Path("results/fit")
N_FIT = 1000
TOP_KS = (1, 2, 3, 5)
RULES = ("base", "all", "greedy", "weighted", "stacked", "similarity")


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
    """{target: [1500 + 750, dim]} of ``prefix`` (cached by digest)."""
    out = {}
    for target, cache in caches.items():
        f = st.tvec / "by-digest" / f"{prefix.digest}.{target}.npy"
        if not f.is_file():
            f = _row_vectors(st, backbone, prefix, target) or f
        if not f.is_file():
            t0 = time.perf_counter()
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, pooled_all(backbone, cache, prefix.first_layer, prefix.key, prefix.value).numpy())
            log(f"{prefix.name} on {target}: {time.perf_counter() - t0:.0f}s")
        out[target] = np.load(f)
    return out


def _subset(cache: TrunkCache, idx: np.ndarray, depth: int) -> TrunkCache:
    return TrunkCache({depth: [cache.states[depth][i] for i in idx]}, cache.base[torch.as_tensor(idx)])


def quick_prefix(
    backbone: Backbone, texts: list[str], labels: list[str], cache: TrunkCache, steps: int, depth: int
) -> tuple[LoadedPrefix, float]:
    """An early-checkpoint prefix (the shipped recipe, ``steps`` steps) trained on the examples
    (90/10 train/dev), as a loaded prefix with its recorded start; and the seconds it took."""
    t0 = time.perf_counter()
    data = TaskData("quick", list(texts), list(labels), groups=[str(i) for i in range(len(texts))])
    train, dev = split(data, 0.1, 0)
    where = {t: i for i, t in enumerate(texts)}
    caches = {d.digest(): _subset(cache, np.array([where[t] for t in d.texts]), depth) for d in (train, dev)}
    cfg = TrainConfig(max_steps=steps, eval_every=max(1, steps // 2), max_length=64, first_layer=depth)
    result = train_prefix(backbone, [TaskSplit(train, dev)], cfg, progress=False, caches=caches)
    meta = result.metadata
    prefix = LoadedPrefix(
        "quick", "quick", result.key, result.value, "none", "<quick>", "native", meta, first_layer=depth
    )
    return prefix, time.perf_counter() - t0


def similarity_choice(ev: Evaluator, quick: LoadedPrefix, prefixes: dict[str, LoadedPrefix]) -> Choice:
    """``base`` + the k sources most similar to ``quick``, k by CV (one SE toward fewer)."""
    ranked = sorted(prefixes, key=lambda n: (-(similarity(quick, prefixes[n]) or -2.0), n))
    tried = []
    for k in TOP_KS:
        top = set(ranked[:k])
        names = tuple(n for n in ev.sources.names if n == BASE_NAME or n in top)
        tried.append((k, names, ev.cv(names)))
    best = max(tried, key=lambda t: t[2].cv_accuracy)
    k, names, cv = next(
        t for t in tried if t[2].cv_accuracy >= best[2].cv_accuracy - paired_se(best[2].correct, t[2].correct)
    )
    sims = {n: round(similarity(quick, prefixes[n]) or float("nan"), 4) for n in ranked}
    trials = tuple(Trial("similarity", t[1], t[2].cv_accuracy, f"top {t[0]}") for t in tried)
    return Choice("similarity", names, cv, trials=trials, detail={"k": k, "ranking": sims})


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
) -> dict[str, Any]:
    """Every rule on every target: test (draw 0) and dev (draws 1..``draws``) rows, written to
    results/fit/rules.json as they come (a rerun skips the rows it has); the sources are the
    folder's prefixes at its shallowest depth (MiniLM's 3, mpnet's 8), over that depth's target trunk."""
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
    out_dir = rules_out(st)
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
            shared = TimedEvaluator(src)
            for rule in rules:
                if (target, draw, rule) in have:
                    continue
                shared.reused()  # counts from here
                t0, extra = time.perf_counter(), 0.0
                if rule == "similarity":
                    fit_texts = [str(i) for i in fit_idx]  # unique keys: the cache is indexed, not read
                    quick, extra = quick_prefix(
                        backbone,
                        fit_texts,
                        list(y[fit_idx]),
                        _subset(caches[target], fit_idx, depth),
                        quick_steps,
                        depth,
                    )
                    choice = similarity_choice(shared, quick, prefixes)
                    fitted = select_and_fit(src, ",".join(choice.inputs), evaluator=shared)
                    fitted = replace(
                        fitted,
                        choice=replace(
                            fitted.choice, rule="similarity", trials=choice.trials, detail=choice.detail
                        ),
                    )
                else:
                    fitted = select_and_fit(src, rule, evaluator=shared)
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
    if row["weights"]:
        return ", ".join(f"{n} {w:.2f}" for n, w in row["weights"].items())
    inputs = row["inputs"]
    if row["rule"] in ("all", "stacked") or len(inputs) == len(row["prefixes"]):
        return f"all {len(inputs)}"
    return ", ".join(inputs)


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


def report_rules(st: Study | None = None) -> str:
    """results/fit/rules.md (another backbone's under results/fit/NAME) from rules.json: per target,
    each rule's test accuracy with paired SEs against base and all, its mean dev accuracy, what it
    kept, and seconds; then the means."""
    out_dir = rules_out(st or study())
    doc = json.loads((out_dir / "rules.json").read_text())
    names = [BASE_NAME, *doc["prefixes"]]
    rows = [r for r in doc["rows"] if r["prefixes"] == names]
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
                + (f" (+{test['quick_seconds']:.0f} quick prefix)" if rule == "similarity" else "")
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
