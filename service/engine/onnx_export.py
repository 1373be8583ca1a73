"""Export :class:`PrefixedForward` to ONNX with the prefix bank as graph inputs, validated and cached.

The exported graph is the torch module itself (one definition for both backends), traced by the
torch.export-based exporter (``dynamo=True``; the TorchScript exporter also handles this module but is
deprecated since torch 2.9 and warns on every call). Rows, sequence length, number of prefixes P and
prefix length Lp are dynamic, so a new or hot-loaded prefix needs no re-export. The fan-out depth of
shared-trunk prefixes (where rows fan out from texts) shapes the control flow, so each graph holds one
depth: one export per depth, exported on first use of that depth and cached (``...-fanN.onnx``); a
hot-loaded prefix of a depth already exported reuses its graph.

Each export is checked against torch on the spot (shapes not seen at export included) and written
atomically to ``onnx_cache_dir`` under a name derived from the backbone fingerprint and pooling. The
full cache key (fingerprint, pooling, opset, exporter and library versions) is stored
in the file's ``metadata_props``; a file whose key differs, or that cannot be read, is re-exported.

Graph optimization is left to ONNX Runtime at session creation (``ORT_ENABLE_ALL``): it already fuses
SkipLayerNormalization/Gelu here, and ORT's offline transformer optimizer measured no faster on top
(its attention fusion does not match the prefix concatenation), so the cached file is the plain export.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from service.engine.backbone import BackboneSpec, load_backbone, read_spec
from service.engine.forward import PrefixedForward
from service.engine.onnx_io import (
    EXPORT_CASE,
    INPUT_NAMES,
    OUTPUT_NAME,
    FixedDepth,
    example_inputs,
    max_abs_diff,
    model_vocab,
)
from service.errors import ModelLoadError

log = logging.getLogger(__name__)

# torch.export keeps global tracing state (fake tensor mode, symbolic shapes): two traces in one
# process at once, e.g. a background depth export of one service and a foreground export of
# another, fail with "Unable to cast ... NotImplementedType". Every trace in the process takes this.
_TRACE_LOCK = threading.Lock()

FORMAT = "prefix-embed-onnx/3"  # 2: texts + row_text inputs, prefix_first, one fan-out depth per graph; 3: float key masks
OPSET = 18
PARITY_TOL = 1e-4  # fp32 ORT vs torch, max abs difference of pooled vectors
META_PREFIX = "prefix_embed."
DIFF_FIELD = META_PREFIX + "validated_max_abs_diff"


# Loggers that narrate every pass of an export at INFO (hundreds of lines per model).
# torch.onnx warns once per process about torchvision ops it cannot register (not used here).
_CHATTY_LOGGERS = {
    "onnxscript": logging.WARNING,
    "onnx_ir": logging.WARNING,
    "torch.onnx": logging.ERROR,
}


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg, quiet in zip(loggers, _CHATTY_LOGGERS.values(), strict=True):
        lg.setLevel(max(lg.getEffectiveLevel(), quiet))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class OnnxExportError(ModelLoadError):
    code = "onnx_export_error"


@dataclass(frozen=True)
class ExportKey:
    """Everything an exported file depends on; any difference means re-export."""

    fingerprint: str
    pooling: str
    pooling_layers: int
    opset: int
    exporter: str
    fan_out: int = 0
    format: str = FORMAT
    dtype: str = "float32"  # int8: quantized from the float32 export (``onnx_int8``)
    quantizer: str = ""  # the quantization recipe and ONNX Runtime version of an int8 file

    def metadata(self) -> dict[str, str]:
        return {META_PREFIX + k: str(v) for k, v in asdict(self).items()}

    def mismatches(self, found: dict[str, str]) -> list[str]:
        """Fields of ``found`` (a file's metadata) that differ from this key. Files written before
        ``dtype``/``quantizer`` existed are float32 exports: a missing field reads as its default."""
        absent = {META_PREFIX + "dtype": "float32", META_PREFIX + "quantizer": ""}
        return [k for k, v in self.metadata().items() if found.get(k, absent.get(k)) != v]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    key: ExportKey
    exported: bool  # False: a valid cached file was reused
    max_abs_diff: float  # ORT vs torch at validation time
    seconds: float = 0.0


def export_key(spec: BackboneSpec, pooling: str, pooling_layers: int, fan_out: int = 0) -> ExportKey:
    import onnxscript
    import transformers

    return ExportKey(
        fingerprint=spec.fingerprint,
        pooling=pooling,
        pooling_layers=pooling_layers if pooling == "multilayer" else 0,  # only multilayer reads it
        opset=OPSET,
        exporter=f"torch-{torch.__version__}-dynamo/onnxscript-{onnxscript.__version__}"
        f"/transformers-{transformers.__version__}",
        fan_out=fan_out,
    )


def cache_path(cache_dir: Path, key: ExportKey) -> Path:
    layers = f"{key.pooling_layers}" if key.pooling == "multilayer" else ""
    dtype = "" if key.dtype == "float32" else f"-{key.dtype}"
    return Path(cache_dir) / f"{key.fingerprint}-{key.pooling}{layers}-fan{key.fan_out}{dtype}.onnx"


def read_export_metadata(path: Path) -> dict[str, str] | None:
    """The file's metadata_props, or None when it is missing or not a readable ONNX model."""
    import onnx

    if not path.is_file():
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "re-export"
        log.warning("cannot read cached ONNX file %s (%s)", path, exc)
        return None
    return {p.key: p.value for p in model.metadata_props}


def trace_forward(forward: FixedDepth) -> object:
    """The ONNX graph of ``forward`` (torch.onnx dynamo export with dynamic axes), not yet validated:
    :func:`export_onnx` compares it with torch before anything is written (tests replace this
    function to feed that check a wrong graph)."""
    from torch.export import Dim

    texts, rows, seq = Dim("texts"), Dim("rows"), Dim("seq")
    prefixes, plen = Dim("prefixes"), Dim("prefix_len")
    dynamic = {
        "input_ids": {0: texts, 1: seq},
        "attention_mask": {0: texts, 1: seq},
        "prefix_index": {0: rows},
        "prefix_keys": {0: prefixes, 3: plen},
        "prefix_values": {0: prefixes, 3: plen},
        "prefix_lengths": {0: prefixes},
        "prefix_shift": {0: prefixes},
        "prefix_first": {0: prefixes},
        "row_text": {0: rows},
    }
    texts_n, seq_n, lengths, plen_n = EXPORT_CASE
    args = example_inputs(
        forward.spec, model_vocab(forward), texts_n, seq_n, lengths, plen_n, seed=0, fan_out=forward.fan_out
    )
    # The exporter's own warnings (axis renames, pytree deprecations) are not actionable here.
    with _TRACE_LOCK, warnings.catch_warnings(record=True) as caught, torch.inference_mode(False):
        warnings.simplefilter("always")
        program = torch.onnx.export(
            forward,
            args,
            dynamo=True,
            verbose=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
        )
    for w in caught:
        log.debug("torch.onnx.export: %s", w.message)
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise OnnxExportError("torch.onnx.export returned no program")
    return program.model_proto


def write_atomically(data: bytes, target: Path) -> None:
    """Temp file in the same folder + fsync + rename: readers see the old file or the new one, whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(model_path: Path, target: Path, key: ExportKey) -> ExportResult:
    """Load the backbone (CPU, fp32), export, validate against torch, write."""
    import onnx

    start = time.perf_counter()
    backbone = load_backbone(model_path, device="cpu", dtype="float32")
    if backbone.spec.fingerprint != key.fingerprint:
        raise OnnxExportError(f"model folder {model_path} changed while exporting; retry")
    inner = PrefixedForward(backbone.model, backbone.spec, key.pooling, key.pooling_layers)
    forward = FixedDepth(inner, key.fan_out).eval()
    with _quiet_exporters():
        proto = trace_forward(forward)
    try:
        data = proto.SerializeToString()  # type: ignore[attr-defined]
    except ValueError as exc:  # the 2 GiB protobuf limit: models this size are out of scope
        raise OnnxExportError(f"cannot serialize the ONNX export of {model_path}: {exc}") from exc
    diff = max_abs_diff(data, forward)
    if not diff <= PARITY_TOL:
        raise OnnxExportError(f"ONNX export differs from torch by {diff:.3g} (tolerance {PARITY_TOL})")
    onnx.helper.set_model_props(proto, {**key.metadata(), DIFF_FIELD: f"{diff:.3g}"})  # type: ignore[arg-type]
    write_atomically(proto.SerializeToString(), target)  # type: ignore[attr-defined]
    del backbone, inner, forward, proto, data
    gc.collect()
    seconds = time.perf_counter() - start
    log.info("exported %s in %.1fs (max |ORT - torch| = %.2g)", target, seconds, diff)
    return ExportResult(target, key, exported=True, max_abs_diff=diff, seconds=seconds)


def ensure_onnx_export(
    model_path: Path,
    cache_dir: Path,
    *,
    pooling: str,
    pooling_layers: int,
    force: bool = False,
    spec: BackboneSpec | None = None,
    fan_out: int = 0,
) -> ExportResult:
    """The cached export for this backbone, pooling and fan-out depth: reused when its key matches,
    else (re-)exported."""
    spec = spec or read_spec(model_path)
    if not 0 <= fan_out < spec.num_layers:
        raise OnnxExportError(f"fan-out depth {fan_out} outside 0..{spec.num_layers - 1}")
    key = export_key(spec, pooling, pooling_layers, fan_out)
    path = cache_path(cache_dir, key)
    cached = None if force else cached_export(path, key)
    if cached is not None:
        return cached
    # A first start's progress (README "Two commands"): one line per graph before its export.
    log.info(
        "exporting the ONNX graph of fan-out depth %d to %s: once per model and depth (a first start "
        "exports each depth its prefixes use, about 15-25 s each on 2 CPUs; later starts reuse them)",
        fan_out,
        path,
    )
    return export_onnx(model_path, path, key)


def cached_export(path: Path, key: ExportKey) -> ExportResult | None:
    """The file at ``path`` when its recorded key is ``key`` (else None, the reason logged)."""
    found = read_export_metadata(path)
    if found is None:
        return None
    stale = key.mismatches(found)
    if not stale:
        log.info("reusing ONNX export %s", path)
        return ExportResult(path, key, exported=False, max_abs_diff=float(found.get(DIFF_FIELD, "nan")))
    log.warning(
        "cached ONNX export %s does not match this backbone/pooling/exporter (%s); re-exporting",
        path,
        ", ".join(f"{k.removeprefix(META_PREFIX)}: {found.get(k)!r} != {key.metadata()[k]!r}" for k in stale),
    )
    return None
