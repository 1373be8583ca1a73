"""The int8 backbone for the CPU provider: ONNX Runtime's dynamic quantization of the float32 export.

Only the MatMuls whose second input is a weight (an initializer) become int8 (``MatMulConstBOnly``),
with one scale per output channel; activations are quantized per call (dynamic), so nothing needs a
calibration set. The prefix bank stays a float32 graph *input*: the attention products with the
prefix keys/values are activation x activation MatMuls and stay float, so a hot-loaded prefix needs
no re-export. The down projection of the first layer's feed-forward block stays float32: its
activations have the outliers that cost the most accuracy (min cosine to float32 on mixed-length
texts: 0.988 with it quantized, 0.991 without; per-tensor scales: 0.934). BENCHMARKS.md ("int8")
has the measurements.

Each depth's int8 file is made once from that depth's float32 export, checked against it on the
validation inputs (``INT8_MIN_COSINE``), and cached beside it (``...-fanN-int8.onnx``) under a key
that adds the dtype and the quantizer (recipe and ONNX Runtime version) to the float32 key.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.onnx_export import (
    DIFF_FIELD,
    META_PREFIX,
    ExportResult,
    OnnxExportError,
    cache_path,
    cached_export,
    write_atomically,
)
from service.engine.onnx_io import INPUT_NAMES, OUTPUT_NAME, VALIDATION_CASES, example_inputs

log = logging.getLogger(__name__)

RECIPE = "dynamic-matmul-constb-per-channel-s8-keep-ffn-out-0/1"
# Smallest per-row cosine between the int8 and float32 graphs on the validation inputs (random ids,
# random prefixes) for a file to be cached; measured on MiniLM 0.986 (depth 0), 0.994 (depths 3, 5).
INT8_MIN_COSINE = 0.95
COSINE_FIELD = META_PREFIX + "validated_min_cosine"


def kept_float(model: object) -> list[str]:
    """MatMul nodes left in float32: the first feed-forward down projection, found by shape (its
    weight maps the wider intermediate size back to the hidden size)."""
    graph = model.graph  # type: ignore[attr-defined]
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    for node in graph.node:
        dims = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
        if dims is not None and len(dims) == 2 and dims[0] > dims[1]:
            return [node.name]
    return []


def _not_from_the_quantizer(record: logging.LogRecord) -> bool:
    # onnxruntime.quantization narrates every node on the root logger (and suggests pre-processing,
    # which shape inference of this graph does not need); records of every named logger pass.
    return "onnxruntime" not in record.pathname


def quantize(fp32_path: Path) -> bytes:
    """The int8 model of the float32 file at ``fp32_path`` (serialized)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    root = logging.getLogger()
    root.addFilter(_not_from_the_quantizer)
    try:
        return _quantized(fp32_path, model, quantize_dynamic, QuantType.QInt8)
    finally:
        root.removeFilter(_not_from_the_quantizer)


def _quantized(fp32_path: Path, model: object, quantize_dynamic: Any, qint8: Any) -> bytes:
    with tempfile.TemporaryDirectory(dir=fp32_path.parent) as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            fp32_path,
            out,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            weight_type=qint8,
            nodes_to_exclude=kept_float(model),
            extra_options={"MatMulConstBOnly": True},
        )
        return out.read_bytes()


def compare(
    int8: bytes | str, fp32: bytes | str, spec: BackboneSpec, vocab: int, fan_out: int
) -> tuple[float, float]:
    """(min per-row cosine, max abs difference) of two models' outputs over the validation inputs."""
    import onnxruntime as ort

    from service.engine.ort_runtime import CPU_PROVIDER, disabled_optimizers, session_options

    def open_(model: bytes | str) -> ort.InferenceSession:
        return ort.InferenceSession(
            model,
            session_options(),
            providers=[CPU_PROVIDER],
            disabled_optimizers=disabled_optimizers([CPU_PROVIDER]),
        )

    a, b = open_(int8), open_(fp32)
    worst_cos, worst_diff = 1.0, 0.0
    for seed, (texts, seq, lengths, plen) in enumerate(VALIDATION_CASES):
        args = example_inputs(spec, vocab, texts, seq, lengths, plen, seed=seed + 1, fan_out=fan_out)
        feed = {n: t.numpy() for n, t in zip(INPUT_NAMES, args, strict=True)}
        got, ref = a.run([OUTPUT_NAME], feed)[0], b.run([OUTPUT_NAME], feed)[0]
        cos = (got * ref).sum(1) / np.maximum(
            np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12
        )
        worst_cos = min(worst_cos, float(cos.min()))
        worst_diff = max(worst_diff, float(np.abs(got - ref).max()))
    return worst_cos, worst_diff


def quantizer_version() -> str:
    import onnxruntime as ort

    return f"{RECIPE}/onnxruntime-{ort.__version__}"


def ensure_int8_export(
    fp32: ExportResult, spec: BackboneSpec, vocab: int, *, force: bool = False
) -> ExportResult:
    """The cached int8 file made from the float32 export ``fp32`` (made, checked and written when
    missing, stale or ``force``)."""
    import onnx

    key = dataclasses.replace(fp32.key, dtype="int8", quantizer=quantizer_version())
    path = cache_path(fp32.path.parent, key)
    cached = None if force else cached_export(path, key)
    if cached is not None:
        return cached
    start = time.perf_counter()
    data = quantize(fp32.path)
    cosine, diff = compare(data, str(fp32.path), spec, vocab, key.fan_out)
    if not cosine >= INT8_MIN_COSINE:
        raise OnnxExportError(
            f"int8 graph of fan-out depth {key.fan_out} drifts from float32: min cosine {cosine:.4f} "
            f"< {INT8_MIN_COSINE}"
        )
    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    props = {**key.metadata(), DIFF_FIELD: f"{diff:.3g}", COSINE_FIELD: f"{cosine:.5f}"}
    onnx.helper.set_model_props(model, props)
    write_atomically(model.SerializeToString(), path)
    seconds = time.perf_counter() - start
    log.info("quantized %s to int8 in %.1fs (min cosine to float32 %.4f)", path, seconds, cosine)
    return ExportResult(path, key, exported=True, max_abs_diff=diff, seconds=seconds)
