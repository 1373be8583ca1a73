"""float16 for the CUDA provider, kept only where it matches the float32 graph.

The cached export stays float32 (it is what the torch parity check validated); the float16 copy is made
in memory at load time with ORT's converter, keeping float32 inputs and outputs (the bank stays float32
on the device, the graph casts it), then compared with the float32 session on the validation inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.onnx_io import INPUT_NAMES, OUTPUT_NAME, VALIDATION_CASES, example_inputs

log = logging.getLogger(__name__)

# max |fp16 - fp32| / max(1, max |fp32|) over the validation inputs; fp16 keeps ~3 significant digits.
FP16_REL_TOL = 1e-2


def to_fp16(path: Path) -> bytes:
    """The model at ``path`` with float16 weights and compute, float32 inputs and outputs."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(path)))
    model.convert_float_to_float16(keep_io_types=True)
    return bytes(model.model.SerializeToString())


def relative_diff(a: Any, b: Any, spec: BackboneSpec, vocab: int, fan_out: int = 0) -> float:
    """Largest relative difference of two sessions' outputs over the validation inputs."""
    worst = 0.0
    for seed, (rows, seq, lengths, plen) in enumerate(VALIDATION_CASES):
        args = example_inputs(spec, vocab, rows, seq, lengths, plen, seed=seed + 1, fan_out=fan_out)
        feed = {n: t.numpy() for n, t in zip(INPUT_NAMES, args, strict=True)}
        got = a.run([OUTPUT_NAME], feed)[0]
        ref = b.run([OUTPUT_NAME], feed)[0]
        worst = max(worst, float(np.abs(got - ref).max() / max(1.0, float(np.abs(ref).max()))))
    return worst


def fp16_session(
    path: Path, fp32: Any, options: Any, spec: BackboneSpec, vocab: int, fan_out: int = 0
) -> Any | None:
    """A float16 session on the same providers as ``fp32``, or None (logged) when it fails or drifts."""
    import onnxruntime as ort

    provider_options = fp32.get_provider_options()
    providers = [(p, provider_options.get(p, {})) for p in fp32.get_providers()]
    try:
        session = ort.InferenceSession(to_fp16(path), options, providers=providers)
        diff = relative_diff(session, fp32, spec, vocab, fan_out)
    except Exception as exc:  # noqa: BLE001 - a converter or kernel gap means "stay float32"
        log.warning("float16 ONNX graph unavailable on %s (%s); serving float32", providers[0][0], exc)
        return None
    if not diff <= FP16_REL_TOL:
        log.warning(
            "float16 ONNX graph drifts by %.3g (> %g) from float32; serving float32", diff, FP16_REL_TOL
        )
        return None
    log.info("float16 ONNX graph within %.2g of float32 (relative)", diff)
    return session
