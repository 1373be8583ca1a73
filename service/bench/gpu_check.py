"""The GPU check (issue 27 item 5), one prepared run: ``scripts/gpu_check.sh`` calls this module.

Steps (each writes its part of ``gpu_check.json`` as soon as it is done, so a run cut short keeps them):

1. ``parity``: the torch engine in float16 and bfloat16 on the device against float32 on the CPU, with
   the shipped prefixes and base (max abs difference, min cosine of the pooled vectors).
2. ``ort``: the ONNX backend on the device (CUDA provider with onnxruntime-gpu) against torch
   float32 on the CPU; the providers ``session.get_providers()`` reports.
3. ``trunk``: the shared-trunk sweep, P = 1..16 x S in {0, 3}, and its MFU (useful FLOPs / time /
   the card's dense peak; ``service/bench/flops.py``).
4. ``shapes``: (a)-(c) with concurrency ``--concurrency`` (256 on a GPU) against infinity-emb's torch
   engine on the same card (``bench service --only-shapes``; needs ``--peer-exe``).

``--dry-run`` runs every step on the CPU at toy sizes (float32 and bfloat16 instead of float16, no
peer): what the test suite runs, so the script cannot rot while no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.backend import build_onnx_encoder, build_torch_encoder
from service.bench.flops import batch_flops, peak_flops
from service.bench.texts import sample_texts
from service.bench.trunk import run_trunk_bench
from service.config import Settings
from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder
from service.engine.prefix import base_prefix
from service.registry.folder import scan_folder


def _settings(**fields: Any) -> Settings:
    return Settings(**fields)


def _vectors(enc: Encoder, bank: PrefixBank, texts: list[str]) -> np.ndarray:
    batch = enc.tokenize(texts, max_length=128, truncate=True)
    out = enc.encode(batch, bank, list(range(len(bank))))
    wait = getattr(enc, "wait_for_exports", None)
    if wait is not None:  # the ONNX backend exports deeper depths in the background: compare at them
        wait()
        out = enc.encode(batch, bank, list(range(len(bank))))
    return out


def _compare(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    return {"max_abs_diff": float(np.abs(got - ref).max()), "min_cosine": float(cos.min())}


def check(
    out_dir: Path, *, device: str, dry_run: bool, concurrency: int, peer_exe: Path | None
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "device": device,
        "dry_run": dry_run,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if device.startswith("cuda"):
        result["card"] = torch.cuda.get_device_name(torch.device(device))

    def save(step: str, value: Any) -> None:
        result[step] = value
        (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{step}: {json.dumps(value)[:400]}", flush=True)

    texts = sample_texts(4 if dry_run else 64)
    cpu = build_torch_encoder(_settings(device="cpu", dtype="float32", backend="torch"))
    loaded, _ = scan_folder(Path("prefixes"), cpu.spec, _settings().prefix_limits())
    bank = PrefixBank.build(loaded, base=base_prefix(cpu.spec))
    ref = _vectors(cpu, bank, texts)
    dtypes = ("float32", "bfloat16") if dry_run else ("float16", "bfloat16")
    parity = {}
    for dtype in dtypes:
        enc = build_torch_encoder(_settings(device=device, dtype=dtype, backend="torch"))
        parity[dtype] = _compare(_vectors(enc, bank, texts), ref)
    save("parity", parity)

    cache = out_dir / "onnx-cache"
    try:
        ort_enc = build_onnx_encoder(_settings(device=device, backend="onnx", onnx_cache_dir=cache))
        save(
            "ort",
            {
                "providers": ort_enc.providers,
                "dtype": ort_enc.dtype,
                **_compare(_vectors(ort_enc, bank, texts), ref),
            },
        )
    except Exception as exc:  # noqa: BLE001 - reported, the other steps still run
        save("ort", {"error": f"{type(exc).__name__}: {exc}"})

    dtype = "float32" if dry_run else "float16"
    counts = [1, 2] if dry_run else [1, 2, 4, 8, 16]
    settings = _settings(
        device=device, dtype=dtype, backend="torch", forward_chunk_rows=0 if not dry_run else None
    )
    trunk = run_trunk_bench(
        settings,
        n_texts=4 if dry_run else 256,
        prefix_counts=counts,
        depths=[0, 3],
        repeats=1 if dry_run else 3,
    )
    peak, source = peak_flops(device, dtype)
    intermediate = int(getattr(cpu.backbone.model.config, "intermediate_size", 0))
    lengths = [len(ids) for ids in cpu.backbone.tokenizer(sample_texts(trunk["B"]))["input_ids"]]
    for row in trunk["rows"]:
        useful = batch_flops(cpu.spec, intermediate, lengths, trunk["prefix_len"], row["P"])
        row["mfu"] = round(useful / row["seconds"] / peak, 4)
    trunk["peak_flops"], trunk["peak_source"] = peak, source
    save("trunk", trunk)

    if dry_run or peer_exe is None:
        save("shapes", {"skipped": "dry run" if dry_run else "no --peer-exe (infinity-emb)"})
        return result
    from service.bench.service_bench import ServiceBench, ServiceBenchConfig

    cfg = ServiceBenchConfig(
        out_dir=out_dir / "shapes",
        device=device,
        peer_exe=peer_exe,
        only_shapes=True,
        shape_variants=("ours", "ours_torch"),
        shape_concurrency=concurrency,
        many_tasks=False,
    )
    save("shapes", ServiceBench(cfg).run().get("shapes", {}))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--peer-exe", type=Path, default=None)
    args = ap.parse_args()
    device = "cpu" if args.dry_run else args.device
    check(args.out, device=device, dry_run=args.dry_run, concurrency=args.concurrency, peer_exe=args.peer_exe)


if __name__ == "__main__":
    main()
