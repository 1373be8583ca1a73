"""The vectors a probe reads, as the service returns them.

Each prefix's vector is L2-normalized (``normalize: true``); a concat joins the normalized vectors
(the 1/sqrt(P) scale of the response does not change a standardized probe). The quantized encodings
(``int8``, ``uint8``, ``binary``, ``ubinary``) are the concat's codes exactly as ``/embed`` returns them
(service/wire/document.py ``quantized_codes``), each prefix with its calibration or the uncalibrated
fallback: levels read as numbers, sign bits unpacked to 0/1 (1 bit per dimension).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.method.represent import PLAIN
from service.wire.document import quantized_codes
from service.wire.encodings import BITS, l2_normalize, unpack_bits

if TYPE_CHECKING:
    from service.engine.calibration import Calibration

# bytes per dimension of each encoding as served (binary/ubinary: 1 bit)
BYTES_PER_DIM = {"float": 4.0, "int8": 1.0, "uint8": 1.0, "binary": 0.125, "ubinary": 0.125}


def concat(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The served concat: each vector L2-normalized, joined in order."""
    return np.concatenate([l2_normalize(v) for v in vectors], axis=1)


def encodings(
    vectors: Sequence[np.ndarray],
    calibrations: Sequence[Calibration | None] | None = None,
    which: Sequence[str] = ("float", "binary", "int8"),
) -> dict[str, np.ndarray]:
    """The concat of ``vectors`` (per prefix [N, dim], unnormalized) in each encoding of ``which``, as
    probe features; ``calibrations`` per prefix (None: every prefix uncalibrated, the fallback)."""
    cals = list(calibrations) if calibrations is not None else [None] * len(vectors)
    stacked = np.stack(vectors, axis=1)  # [N, P, dim], as the engine returns them
    dim = stacked.shape[1] * stacked.shape[2]
    out: dict[str, np.ndarray] = {}
    for enc in which:
        if enc == "float":
            out[enc] = concat(vectors)
            continue
        (code,) = quantized_codes(stacked, enc, cals, "concat")
        out[enc] = (unpack_bits(code, dim, enc) if enc in BITS else code).astype(np.float32)
    return out


@dataclass(frozen=True)
class FeatureSet:
    """One representation of a target's texts: ``name`` (table row), vectors, bytes per text as served."""

    name: str
    kind: str  # plain | single | baseline | concat | leave-one-out | binary | int8
    dropped: str | None
    features: np.ndarray
    bytes_per_text: int


def feature_sets(
    reps: dict[str, np.ndarray], sources: Sequence[str], baselines: Sequence[str] = ()
) -> list[FeatureSet]:
    """plain; each source prefix; each baseline prefix; concat of sources; concat minus each source;
    concat as binary and as int8."""
    sets = [FeatureSet(PLAIN, "plain", None, l2_normalize(reps[PLAIN]), reps[PLAIN].shape[1] * 4)]
    for n in sources:
        sets.append(FeatureSet(n, "single", None, l2_normalize(reps[n]), reps[n].shape[1] * 4))
    for n in baselines:
        sets.append(FeatureSet(n, "baseline", None, l2_normalize(reps[n]), reps[n].shape[1] * 4))
    if len(sources) < 2:
        return sets
    full = concat([reps[n] for n in sources])
    dim = full.shape[1]
    sets.append(FeatureSet("concat", "concat", None, full, dim * 4))
    for n in sources:
        rest = concat([reps[s] for s in sources if s != n])
        sets.append(FeatureSet(f"concat - {n}", "leave-one-out", n, rest, (dim - reps[n].shape[1]) * 4))
    enc = encodings([reps[n] for n in sources])
    sets.append(FeatureSet("concat binary", "binary", None, enc["binary"], (dim + 7) // 8))
    sets.append(FeatureSet("concat int8", "int8", None, enc["int8"], dim))
    return sets
