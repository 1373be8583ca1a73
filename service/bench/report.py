"""Turn a service-benchmark result into a PNG (scaling with P) and Markdown tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.bench.cache_bench import cache_markdown


def _rows(result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in result["phases"] if p["phase"] == name]


def plot_scaling(result: dict[str, Any], path: Path) -> Path:
    """Vectors/s and texts/s against P, for the service (end to end) and the raw encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    service = {p["P"]: p["vectors_per_s"] for p in _rows(result, "service_scaling")}
    raw = {p["prefixes"]: p["vectors_per_s"] for p in _rows(result, "raw_encoder")}
    ps = sorted(service)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, per_text in zip(axes, (False, True), strict=True):
        for label, data, style in (("service (HTTP, c=64)", service, "o-"), ("raw encoder", raw, "s--")):
            xs = [p for p in ps if p in data]
            ys = [data[p] / (p if per_text else 1) for p in xs]
            ax.plot(xs, ys, style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ps, [str(p) for p in ps])
        ax.set_xlabel("prefixes per text (P)")
        ax.set_ylabel("texts / s" if per_text else "vectors (text x prefix) / s")
        ax.grid(True, alpha=0.3)
        ax.legend()
    m = result["machine"]
    fig.suptitle(f"prefix-embed scaling with P, {m['cpu'] if not m.get('gpu') else m['gpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(result: dict[str, Any]) -> str:
    """The tables that go into BENCHMARKS.md."""
    out = shapes_markdown(result) + cache_markdown(result)
    head = "| phase | round | P | c | vectors/s | p50 ms | p99 ms | ok/sent | load avg after |"
    out += [head, "|---|---|---|---|---|---|---|---|---|"]
    for p in result["phases"]:
        if "concurrency" not in p:
            continue
        label = p["phase"] + (f" ({p['encoding']})" if "encoding" in p else "")
        if "target" in p:
            label += f" {p['target']} ({p['shape']})"
        out.append(
            f"| {label} | {p.get('round', '')} | {p.get('P', 1)} | {p['concurrency']} | {p['vectors_per_s']} | {p['p50_ms']} | "
            f"{p['p99_ms']} | {p['ok']}/{p['requests']} | {p['loadavg'][0]} |"
        )
    out += ["", "| raw encoder | round | P | vectors/s | MFU | load avg after |", "|---|---|---|---|---|---|"]
    for p in _rows(result, "raw_encoder") + _rows(result, "ratio_raw_encoder"):
        mfu = f"{p['mfu']:.1%}" if "mfu" in p else ""
        out.append(
            f"| {p['phase']} | {p.get('round', '')} | {p['prefixes']} | {p['vectors_per_s']} | {mfu} | "
            f"{p['loadavg'][0]} |"
        )
    for p in _rows(result, "slot_policy"):
        out += [
            "",
            "| slot policy mix/policy | requests | vectors/s | forward calls | rows computed / needed |",
        ]
        out.append("|---|---|---|---|---|")
        for key, v in p.items():
            if isinstance(v, dict) and "vectors_per_s" in v:
                out.append(
                    f"| {key} | {v['requests']} | {v['vectors_per_s']} | {v['forward_calls']} | "
                    f"{v['rows_computed']} / {v['rows_needed']} |"
                )
    out += ["", "Ratios: `" + str(result.get("ratios")) + "`"]
    if "peer_error" in result:
        out += ["", f"Peer error: `{result['peer_error']}`"]
    return "\n".join(out)


def shapes_markdown(result: dict[str, Any]) -> list[str]:
    """The shape comparison (issue 13): medians per target, ours / infinity's fastest engine, RSS."""
    summary = result.get("shapes")
    if not summary:
        return []
    targets = list(next(iter(summary["vectors_per_s"].values()), {}))
    ours = list(summary["ours_vs_fastest_peer"]) or ["ours"]  # every server (and model) of ours
    out = [
        "| shape | " + " | ".join(targets) + " | "
        + " | ".join(f"{o} / fastest infinity (rounds)" for o in ours) + " |"
    ]  # fmt: skip
    out.append("|---|" + "---|" * (len(targets) + len(ours)))
    for shape, rates in summary["vectors_per_s"].items():
        cells = []
        for o in ours:
            ratio = summary["ours_vs_fastest_peer"].get(o, {}).get(shape, {})
            rounds = ", ".join(str(r) for r in ratio.get("rounds", []))
            cells.append(f"**{ratio.get('median')}** ({rounds})")
        out.append(
            f"| ({shape}) | " + " | ".join(str(rates[t]) for t in targets) + " | " + " | ".join(cells) + " |"
        )
    out.append("")
    for key in ("service_vs_raw_b", "p8_vectors_vs_p1_texts_b"):
        if key in summary:
            out.append(f"- {key}: **{summary[key]['median']}** (rounds {summary[key]['rounds']})")
    out.append(f"- RSS after the run (MB): {summary['rss_mb']}")
    out.append("")
    return out
