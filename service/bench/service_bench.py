"""``python -m service bench service``: the service under loopback load, against the raw encoder
and against infinity-emb, with the ratios of issue 4 measured side by side in one run.

Servers are started here on 127.0.0.1 and stopped at the end. Every phase sends a fixed list of
requests (bounded in count and time). Results: a JSON document and a PNG of the P scaling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from service.backend import build_torch_encoder
from service.bench.flops import batch_flops, peak_flops
from service.bench.inproc import raw_encoder_rate, slot_policy_rates
from service.bench.load import Call, fetch_json, run_load
from service.bench.many_tasks import ManyTaskTarget, many_task_summary, plot_many_tasks, run_many_tasks
from service.bench.servers import export_for_optimum, infinity_server, our_server
from service.bench.shapes import OUR_VARIANTS, Target, default_shapes, run_shapes, shape_summary
from service.bench.workload import (
    bench_texts,
    bert_base_folder,
    embed_calls,
    openai_calls,
    split_calls,
    write_prefixes,
)
from service.config import Settings, default_model_path
from service.engine.bank import PrefixBank
from service.procs import ServerProcess, free_port
from service.registry.folder import scan_folder

PEER_MODEL = "peer-model"  # the name infinity-emb serves the bench's model folder under


@dataclass
class ServiceBenchConfig:
    out_dir: Path
    model: Path | None = None
    backbone: str = "minilm"  # minilm | bert-base (random weights, speed only)
    device: str = "cpu"
    dtype: str = "auto"
    texts: int = 64
    prefixes: int = 8
    prefix_len: int = 16
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 64])
    scaling: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    encoding: str = "base64"
    seq_len: int | None = None
    max_batch_tokens: int = 32768
    chunk_rows: int | None = None
    peer: bool = True
    peer_exe: Path | None = None  # None: `infinity_emb` on PATH (resolved when the peer runs)
    policy: bool = True
    rounds: int = 3  # interleaved rounds of the headline ratios
    time_limit_s: float = 300.0
    shapes: bool = True  # the three load shapes against infinity's torch and optimum engines
    only_shapes: bool = False
    shape_scale: float = 1.0  # x the request counts of each shape
    shape_concurrency: int | None = None  # (b) and (c) at this concurrency (the GPU check: 256)
    peer_onnx_dir: Path | None = None  # infinity's ONNX export (default: <out_dir>/infinity-onnx)
    # the vector cache at shape (b): these % of repeated texts, cache on vs off (empty: not run)
    cache_repeats: tuple[int, ...] = ()
    only_cache: bool = False
    cache_requests: int = 400  # requests per stream (90 % repeats: 40 new texts, more than c = 32)
    # our servers in the shape comparison (labels of shapes.OUR_VARIANTS); "ours" = default settings
    shape_variants: tuple[str, ...] = ("ours", "ours_int8", "ours_torch")
    # what our servers are asked for at the shapes (`/v1/embeddings`' model: a prefix name, `base`,
    # or a served model of the shipped models.json); empty: one random all-layer bench prefix
    shape_models: tuple[str, ...] = ()
    shape_p8: bool = True  # also our server at (b) with P = 8 random all-layer prefixes per text
    # the many-task request (issue 27 item 4): P = base + P-1 shipped prefixes vs P requests to the peer
    many_tasks: bool = True
    many_task_counts: tuple[int, ...] = (1, 2, 4, 6)
    shipped_prefix_dir: Path = Path("prefixes")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "commit": commit,
        "loadavg_start": _loadavg(),
    }


class ServiceBench:
    """Holds the shared pieces (model folder, prefixes, texts, in-process encoder) of one run."""

    def __init__(self, cfg: ServiceBenchConfig) -> None:
        self.cfg = cfg
        self.result: dict[str, Any] = {"machine": machine(), "config": _jsonable(cfg.__dict__), "phases": []}
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        base = cfg.model or default_model_path()
        self.model = (
            bert_base_folder(cfg.out_dir / "bert-base-random", base) if cfg.backbone == "bert-base" else base
        )
        overrides: dict[str, Any] = {
            "model": self.model,
            "device": cfg.device,
            "dtype": cfg.dtype,
            "forward_chunk_rows": cfg.chunk_rows,
            "max_input_tokens": cfg.seq_len,
            "max_batch_tokens": cfg.max_batch_tokens,
        }
        self.settings = Settings(**overrides)
        self.encoder = build_torch_encoder(self.settings)
        self.spec = self.encoder.spec
        self.tmp = Path(tempfile.mkdtemp(prefix="prefix-embed-bench-"))
        self.prefix_dir = self.tmp / "prefixes"
        n = max([cfg.prefixes, *cfg.scaling])
        self.names = write_prefixes(self.prefix_dir, self.spec, n, cfg.prefix_len)
        loaded, rejected = scan_folder(self.prefix_dir, self.spec, self.settings.prefix_limits())
        _check(not rejected, rejected)
        self.bank = PrefixBank.build(loaded)
        self.texts = bench_texts(cfg.texts, cfg.seq_len)
        self.intermediate = int(getattr(self.encoder.backbone.model.config, "intermediate_size", 0))
        self.lengths: list[int] = []
        self.peak: tuple[float, str] | None = None

    # --- helpers -------------------------------------------------------------------------------
    def flops(self, n_prefixes: int) -> float:
        return batch_flops(self.spec, self.intermediate, self.lengths, self.cfg.prefix_len, n_prefixes)

    def mfu(self, n_prefixes: int, seconds: float) -> float:
        assert self.peak is not None
        return self.flops(n_prefixes) / seconds / self.peak[0]

    def phase(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        entry = {"phase": name, **data, "loadavg": _loadavg()}
        self.result["phases"].append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "lengths"}), flush=True)
        return entry

    def load(self, base: str, calls: list[Call], concurrency: int) -> dict[str, Any]:
        res = asyncio.run(run_load(base, calls, concurrency, time_limit_s=self.cfg.time_limit_s))
        return res.summary()

    # --- phases --------------------------------------------------------------------------------
    def run_raw(self) -> None:
        cfg = self.cfg
        dtype = self.encoder.dtype
        self.peak = peak_flops(self.encoder.device, dtype)
        self.result["peak_flops"] = {"flops": self.peak[0], "source": self.peak[1], "dtype": dtype}
        for p in sorted({cfg.prefixes, *cfg.scaling}):
            r = raw_encoder_rate(self.encoder, self.bank, self.texts, list(range(p)))
            self.lengths = r.pop("lengths")
            r["mfu"] = round(self.mfu(p, r["seconds"]), 4)
            self.phase("raw_encoder", r)

    def run_policy(self) -> None:
        texts = self.texts[: min(8, len(self.texts))]  # `union` on the split mix costs P x P rows
        rates = slot_policy_rates(
            self.encoder, self.bank, texts, self.cfg.prefixes, max_batch_tokens=self.cfg.max_batch_tokens
        )
        self.phase("slot_policy", {"texts": len(texts), "prefixes": self.cfg.prefixes, **rates})

    def run_service(self) -> None:
        """Our server: concurrency sweep, encodings, P scaling, then the interleaved ratio rounds
        and the peer comparison while it is still up."""
        cfg = self.cfg
        port = free_port()
        env = {
            "PREFIX_EMBED_DEVICE": cfg.device,
            "PREFIX_EMBED_DTYPE": cfg.dtype,
            "PREFIX_EMBED_MAX_BATCH_TOKENS": str(cfg.max_batch_tokens),
            "PREFIX_EMBED_REQUEST_TIMEOUT_S": "600",
            "PREFIX_EMBED_MAX_QUEUE_REQUESTS": "4096",
        }
        if cfg.chunk_rows is not None:
            env["PREFIX_EMBED_FORWARD_CHUNK_ROWS"] = str(cfg.chunk_rows)
        if cfg.seq_len is not None:
            env["PREFIX_EMBED_MAX_INPUT_TOKENS"] = str(cfg.seq_len)
        base = f"http://127.0.0.1:{port}"
        names = self.names[: cfg.prefixes]
        c = max(cfg.concurrency)
        with our_server(
            port, model=self.model, prefix_dir=self.prefix_dir, env=env, log_path=cfg.out_dir / "server.log"
        ) as srv:
            self.result["our_startup_s"] = round(srv.startup_s, 1)
            doc = asyncio.run(fetch_json(base, embed_calls(self.texts[:1], names, "float")[0]))
            _check(len(doc["data"]) == 1 and len(doc["data"][0]["embeddings"]) == len(names), doc)
            self.load(base, embed_calls(self.texts[:8], names, cfg.encoding), 8)  # warm-up
            for k in cfg.concurrency:
                r = self.load(base, embed_calls(self.texts, names, cfg.encoding), k)
                self.phase("service_all_prefixes", {"P": len(names), "encoding": cfg.encoding, **r})
            other = "float" if cfg.encoding != "float" else "base64"
            r = self.load(base, embed_calls(self.texts, names, other), c)
            self.phase("service_all_prefixes", {"P": len(names), "encoding": other, **r})
            for p in cfg.scaling:
                r = self.load(base, embed_calls(self.texts, self.names[:p], cfg.encoding), c)
                r["mfu"] = round(self.mfu(p, cfg.texts * p / r["vectors_per_s"]), 4) if r["ok"] else None
                self.phase("service_scaling", {"P": p, "encoding": cfg.encoding, **r})
            # The headline ratios: the three variants alternate, round after round, so that load
            # from other tenants drifts over all of them alike; ratios are taken within a round.
            for rnd in range(cfg.rounds):
                raw = raw_encoder_rate(self.encoder, self.bank, self.texts, list(range(len(names))))
                raw.pop("lengths")
                self.phase("ratio_raw_encoder", {"round": rnd, "P": len(names), **raw})
                r = self.load(base, embed_calls(self.texts, names, cfg.encoding), c)
                self.phase("ratio_all_prefixes", {"round": rnd, "P": len(names), **r})
                r = self.load(base, split_calls(self.texts, names, cfg.encoding), c)
                self.phase("ratio_one_prefix_per_request", {"round": rnd, "P": len(names), **r})
            if cfg.peer:
                self.run_peer(base)
            else:
                for k in cfg.concurrency:
                    r = self.load(base, openai_calls(self.texts, self.names[0]), k)
                    self.phase("peer_ours_one_prefix", {"round": 0, **r})
            self.result["our_metrics"] = _scrape(base)

    def run_peer(self, ours: str) -> None:
        """infinity-emb vs our service with one prefix: same client, same texts, alternating."""
        cfg = self.cfg
        if cfg.backbone != "minilm":
            self.result["peer_error"] = "peer comparison runs on a real backbone only (not bert-base)"
            return
        found = shutil.which("infinity_emb")
        exe = cfg.peer_exe or (Path(found) if found else None)
        if exe is None:
            self.result["peer_error"] = "no infinity_emb on PATH: pass --peer-exe (see BENCHMARKS.md, Peer)"
            return
        port = free_port()
        peer = f"http://127.0.0.1:{port}"
        try:
            with infinity_server(
                port,
                executable=exe,
                model=self.model,
                device=cfg.device,
                served_name=PEER_MODEL,
                log_path=cfg.out_dir / "infinity.log",
            ) as srv:
                self.result["peer_startup_s"] = round(srv.startup_s, 1)
                self.result["peer_version"] = _peer_version(exe)
                doc = asyncio.run(
                    fetch_json(peer, openai_calls(self.texts[:1], PEER_MODEL, "/embeddings")[0])
                )
                _check(
                    len(doc["data"]) == 1 and len(doc["data"][0]["embedding"]) == self.spec.hidden_size, doc
                )
                self.load(peer, openai_calls(self.texts[:8], PEER_MODEL, "/embeddings"), 8)  # warm-up
                self.load(ours, openai_calls(self.texts[:8], self.names[0]), 8)
                for k in cfg.concurrency:
                    for rnd in range(cfg.rounds):
                        r = self.load(ours, openai_calls(self.texts, self.names[0]), k)
                        self.phase("peer_ours_one_prefix", {"round": rnd, "route": "/v1/embeddings", **r})
                        r = self.load(peer, openai_calls(self.texts, PEER_MODEL, "/embeddings"), k)
                        self.phase("peer_infinity", {"round": rnd, "route": "/embeddings", **r})
        except (OSError, RuntimeError, TimeoutError) as exc:
            self.result["peer_error"] = f"{type(exc).__name__}: {exc}"[-4000:]
            print(f"peer failed: {self.result['peer_error']}", flush=True)

    def run_shapes(self) -> None:
        """Shapes (a), (b), (c) on our server (default settings, and torch for the backend rule)
        and on infinity-emb's torch and optimum (ONNX) engines, all up at once, interleaved."""
        import contextlib

        from service.backend import build_encoder_for

        cfg = self.cfg
        if cfg.backbone != "minilm":
            self.result["shapes_error"] = "the shape comparison runs on a real backbone only (not bert-base)"
            return
        shapes = default_shapes(cfg.shape_scale, cfg.shape_concurrency)
        texts = self.texts
        logs = cfg.out_dir
        base_env = {
            "PREFIX_EMBED_DEVICE": cfg.device,
            "PREFIX_EMBED_REQUEST_TIMEOUT_S": "600",
            "PREFIX_EMBED_MAX_QUEUE_REQUESTS": "4096",
        }
        specs: list[tuple[str, str, str, str, ServerProcess]] = []
        shipped = self.add_shipped_prefixes() if cfg.many_tasks or cfg.shape_models else []
        for label in cfg.shape_variants:
            port = free_port()
            server = our_server(
                port,
                model=self.model,
                prefix_dir=self.prefix_dir,
                env={**base_env, **OUR_VARIANTS[label]},
                log_path=logs / f"shapes-{label}.log",
            )
            for asked in cfg.shape_models or (self.names[0],):  # one server, each model interleaved
                name = f"{label}:{asked}" if cfg.shape_models else label
                specs.append((name, "ours", f"http://127.0.0.1:{port}", asked, server))
        found = shutil.which("infinity_emb")
        peer_exe = cfg.peer_exe or (Path(found) if found else None)
        if cfg.peer and peer_exe is None:
            self.result["shapes_peer_error"] = (
                "no infinity_emb on PATH: pass --peer-exe (BENCHMARKS.md, Peer)"
            )
        if cfg.peer and peer_exe is not None:
            onnx_dir = export_for_optimum(
                peer_exe, self.model, cfg.peer_onnx_dir or cfg.out_dir / "infinity-onnx"
            )
            for engine, folder in (("torch", self.model), ("optimum", onnx_dir)):
                port = free_port()
                server = infinity_server(
                    port,
                    executable=peer_exe,
                    model=folder,
                    device=cfg.device,
                    served_name=PEER_MODEL,
                    log_path=logs / f"shapes-infinity-{engine}.log",
                    engine=engine,
                )
                specs.append((f"infinity_{engine}", "peer", f"http://127.0.0.1:{port}", PEER_MODEL, server))
        settings = self.settings.model_copy(update={"backend": "auto"})
        raw_encoder, choice = build_encoder_for(settings)
        self.result["shapes_default_backend"] = {"backend": raw_encoder.backend, "reason": choice.reason}
        b_texts = [texts[i % len(texts)] for i in range(next(s.requests for s in shapes if s.name == "b"))]

        def raw_b() -> dict[str, Any]:
            r = raw_encoder_rate(raw_encoder, self.bank, b_texts, [0], batch_texts=32)
            r.pop("lengths")
            return r

        with contextlib.ExitStack() as stack:
            targets = []
            started: list[ServerProcess] = []
            for name, kind, url, model, srv in specs:
                if not any(srv is s for s in started):  # a server that answers several targets starts once
                    stack.enter_context(srv)
                    started.append(srv)
                self.result.setdefault("startup_s", {})[name] = round(srv.startup_s, 1)
                path = "/v1/embeddings" if kind == "ours" else "/embeddings"
                targets.append(Target(name, kind, url, path, model, srv))
            run_shapes(
                targets,
                texts,
                shapes,
                rounds=cfg.rounds,
                raw_b=raw_b,
                p8=(targets[0], self.names[: cfg.prefixes]) if cfg.shape_p8 else None,
                record=self.phase,
                time_limit_s=cfg.time_limit_s,
            )
            self.result["shapes"] = shape_summary(self.result["phases"], targets)
            if shipped and cfg.many_tasks:  # shape_models alone copies them too
                self.run_many_tasks(targets, shipped)

    def add_shipped_prefixes(self) -> list[str]:
        """Copy the shipped prefixes beside the bench's random ones; their names, ``base`` first."""
        names = []
        for path in sorted(self.cfg.shipped_prefix_dir.glob("*.safetensors")):
            shutil.copyfile(path, self.prefix_dir / path.name)
            names.append(path.stem)
        pins = self.cfg.shipped_prefix_dir / "models.json"
        if pins.is_file():  # the served models (the shipped default among them) may be asked for by name
            shutil.copyfile(pins, self.prefix_dir / pins.name)
        return ["base", *names]

    def run_many_tasks(self, targets: list[Target], names: list[str]) -> None:
        cfg = self.cfg
        layers = self.spec.num_layers
        loaded, _ = scan_folder(self.prefix_dir, self.spec, self.settings.prefix_limits())
        depth = min((p.first_layer for p in loaded if p.name in names), default=0)
        run_many_tasks(
            [ManyTaskTarget(t.name, t.kind, t.base_url, t.model) for t in targets],
            self.texts,
            names,
            prefix_counts=[p for p in cfg.many_task_counts if p <= len(names)],
            layers=layers,
            trunk_depth=depth,
            rounds=cfg.rounds,
            record=self.phase,
            time_limit_s=cfg.time_limit_s,
        )
        peers = [t.name for t in targets if t.kind == "peer"]
        self.result["many_tasks"] = many_task_summary(self.result["phases"], peers)
        title = f"many-task request: P vectors per text, {self.result['machine'].get('cpu', '')}"
        plot_many_tasks(self.result["many_tasks"], cfg.out_dir / "many_tasks.png", title)

    def run_cache(self) -> None:
        """The vector cache at shape (b): two servers alike but for the cache, up at once, interleaved
        (service/bench/cache_bench.py)."""
        import contextlib

        from service.bench.cache_bench import CacheTarget, cache_summary, run_cache_rounds

        cfg = self.cfg
        env = {"PREFIX_EMBED_DEVICE": cfg.device, "PREFIX_EMBED_REQUEST_TIMEOUT_S": "600",
               "PREFIX_EMBED_MAX_QUEUE_REQUESTS": "4096"}  # fmt: skip
        default_bytes = str(Settings.model_fields["vector_cache_bytes"].default)
        with contextlib.ExitStack() as stack:
            targets = []
            for name, cache_bytes in (("cache_off", "0"), ("cache_on", default_bytes)):
                port = free_port()
                srv = stack.enter_context(
                    our_server(
                        port,
                        model=self.model,
                        prefix_dir=self.prefix_dir,
                        env={**env, "PREFIX_EMBED_VECTOR_CACHE_BYTES": cache_bytes},
                        log_path=cfg.out_dir / f"{name}.log",
                    )  # fmt: skip
                )
                self.result.setdefault("startup_s", {})[name] = round(srv.startup_s, 1)
                targets.append(CacheTarget(name, f"http://127.0.0.1:{port}", self.names[0]))
            shape_b = next(s for s in default_shapes(cfg.shape_scale) if s.name == "b")
            run_cache_rounds(
                targets,
                levels=cfg.cache_repeats,
                requests=cfg.cache_requests,
                concurrency=shape_b.concurrency,
                rounds=cfg.rounds,
                record=self.phase,
                time_limit_s=cfg.time_limit_s,
            )
        self.result["cache"] = cache_summary(self.result["phases"])

    def run(self) -> dict[str, Any]:
        if self.cfg.only_shapes or self.cfg.only_cache:
            if self.cfg.only_shapes:
                self.run_shapes()
            if self.cfg.cache_repeats:
                self.run_cache()
            self.result["machine"]["loadavg_end"] = _loadavg()
            return self.result
        self.run_raw()
        if self.cfg.policy:
            self.run_policy()
        self.run_service()
        if self.cfg.shapes:
            self.run_shapes()
        if self.cfg.cache_repeats:
            self.run_cache()
        self.result["ratios"] = ratios(self.result["phases"], self.cfg)
        self.result["machine"]["loadavg_end"] = _loadavg()
        return self.result


def _by(phases: list[dict[str, Any]], name: str, **match: Any) -> dict[str, Any] | None:
    for p in phases:
        if p["phase"] == name and all(p.get(k) == v for k, v in match.items()):
            return p
    return None


def _paired(phases: list[dict[str, Any]], num: str, den: str, **match: Any) -> dict[str, Any] | None:
    """Per-round ratios num/den of vectors/s (same round = same load conditions), and their median."""
    per_round = []
    for p in phases:
        if p["phase"] != num or not all(p.get(k) == v for k, v in match.items()):
            continue
        other = _by(phases, den, round=p.get("round"), **match)
        if other and other["vectors_per_s"]:
            per_round.append(round(p["vectors_per_s"] / other["vectors_per_s"], 3))
    if not per_round:
        return None
    return {"median": statistics.median(per_round), "rounds": per_round}


def ratios(phases: list[dict[str, Any]], cfg: ServiceBenchConfig) -> dict[str, Any]:
    """The headline ratios, each from interleaved phases of this same run."""
    out: dict[str, Any] = {
        "all_prefixes_vs_one_prefix_per_request": _paired(
            phases, "ratio_all_prefixes", "ratio_one_prefix_per_request"
        ),
        "service_vs_raw_encoder": _paired(phases, "ratio_all_prefixes", "ratio_raw_encoder"),
        "ours_vs_infinity_one_prefix": {
            str(k): _paired(phases, "peer_ours_one_prefix", "peer_infinity", concurrency=k)
            for k in cfg.concurrency
        },
        "service_vs_raw_by_P_single_pass": {},
    }
    for q in cfg.scaling:
        s, r = _by(phases, "service_scaling", P=q), _by(phases, "raw_encoder", prefixes=q)
        if s and r:
            out["service_vs_raw_by_P_single_pass"][str(q)] = round(s["vectors_per_s"] / r["vectors_per_s"], 3)
    return out


def _scrape(base: str) -> dict[str, float]:
    """The batcher's counters from ``/metrics`` (forward calls, rows, padding) after the run."""
    import httpx

    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.HTTPError as exc:
        return {"error": f"{exc}"}  # type: ignore[dict-item]
    wanted = (
        "prefix_embed_forward_calls_total",
        "prefix_embed_batch_rows_total",
        "prefix_embed_batch_tokens_sum",
        "prefix_embed_batch_tokens_count",
        "prefix_embed_padding_ratio_sum",
        "prefix_embed_padding_ratio_count",
        "prefix_embed_queue_seconds_sum",
        "prefix_embed_queue_seconds_count",
        "prefix_embed_inference_seconds_sum",
        "prefix_embed_inference_seconds_count",
    )
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted:
            out[parts[0]] = float(parts[1])
    return out


def _peer_version(exe: Path) -> str:
    pip = exe.parent / "pip"
    try:
        out = subprocess.run([str(pip), "show", "infinity-emb"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return next(
        (ln.split(":", 1)[1].strip() for ln in out.stdout.splitlines() if ln.startswith("Version")), "?"
    )


def _check(ok: bool, detail: object) -> None:
    if not ok:
        raise RuntimeError(f"unexpected response: {str(detail)[:500]}")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}
