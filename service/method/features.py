"""The vectors a probe reads, as the service returns them.

Each prefix's vector is L2-normalized (``normalize: true``); a concat joins the normalized vectors
(the 1/sqrt(P) scale of the response does not change a standardized probe); ``binary`` = the
concat's sign bits (``numpy.packbits(x > 0)``, 1 bit per dimension) and ``int8`` =
``round(127 x / max|x|)`` per vector, both exactly as service/wire/encodings.py encodes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.method.represent import PLAIN
from service.wire.encodings import binarize, int8_quantize, l2_normalize


def concat(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The served concat: each vector L2-normalized, joined in order."""
    return np.concatenate([l2_normalize(v) for v in vectors], axis=1)


def encodings(full: np.ndarray) -> dict[str, np.ndarray]:
    """float, binary (sign bits, as ``encoding: "binary"``) and int8 (as ``encoding: "int8"``)."""
    dim = full.shape[1]
    bits = np.unpackbits(binarize(full), axis=1)[:, :dim].astype(np.float32)
    return {"float": full, "binary": bits, "int8": int8_quantize(full).astype(np.float32)}


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
    enc = encodings(full)
    sets.append(FeatureSet("concat binary", "binary", None, enc["binary"], (dim + 7) // 8))
    sets.append(FeatureSet("concat int8", "int8", None, enc["int8"], dim))
    return sets
