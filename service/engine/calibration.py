"""Calibration: per-dimension statistics of one prefix's vectors over a calibration corpus, what the
calibrated encodings need (``int8``/``uint8`` ranges, the ``binary`` transform; service/wire/encodings.py).

The statistics are of the **L2-normalized** vectors, because every quantized encoding encodes each
prefix's unit vector (the pipeline's per-prefix normalization, service/wire/document.py): ``lo``/``hi``
(minimum and maximum) are the ``ranges`` sentence-transformers' ``quantize_embeddings`` computes from
calibration embeddings (``np.vstack((min, max))``); ``centre`` (mean) and ``scale`` (standard
deviation) standardize a vector before ``binary`` takes its signs, after a random ±1 projection of the
prefix's own (``projection``, a seed drawn from the prefix's identity; None: the signs of the
standardized dimensions themselves). Why the projection: RESULTS.md, "Calibrated encodings". A calibration is tied to what it measured: the backbone, the
pooling and the prefix's tensors (:func:`vectors_identity`), so it is never applied to other vectors.
The file format (prefix metadata ``calibration``, the base file) is service/registry/calibration.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.engine.bank import PrefixBank
from service.engine.direct import embed_sync, token_limit
from service.engine.encoder import Encoder
from service.engine.prefix import LoadedPrefix

MIN_SCALE = 1e-6  # the scale of a dimension that did not vary over the corpus


def pooling_id(pooling: str, layers: int) -> str:
    """What a calibration records as its pooling: ``multilayer:k`` names its k, the others need none."""
    return f"{pooling}:{layers}" if pooling == "multilayer" else pooling


def applicable(prefix: LoadedPrefix, pooling: str) -> Calibration | None:
    """The prefix's calibration if it measured vectors pooled as ``pooling`` (a :func:`pooling_id`);
    None otherwise (the backbone and the tensors are checked when the file is read)."""
    cal = prefix.calibration
    return cal if cal is not None and cal.pooling == pooling else None


def measures(cal: Calibration, prefix: LoadedPrefix, corpus: CalibrationCorpus, pooling: str) -> bool:
    """Whether ``cal`` is already the calibration of ``prefix`` over ``corpus`` with ``pooling`` (so
    measuring again would change nothing but float rounding)."""
    return (
        cal.identity == vectors_identity(prefix)
        and cal.pooling == pooling
        and cal.corpus.get("sha256") == corpus.sha256
        and cal.projection is not None  # made before the projection: measure again
    )


def vectors_identity(prefix: LoadedPrefix) -> str:
    """What a prefix's vectors depend on besides the backbone and pooling: for ``base`` its digest (the
    backbone fingerprint's), for a file its tensors as served (float32), depth and position convention.
    A calibration records it, so one copied onto other tensors (a re-trained file keeping its old
    metadata) is refused instead of quantizing with another prefix's statistics."""
    if prefix.builtin:
        return prefix.digest
    h = hashlib.sha256(
        f"{prefix.position_convention}:{prefix.first_layer}:{tuple(prefix.key.shape)}:".encode()
    )
    h.update(prefix.key.detach().float().contiguous().numpy().tobytes())
    h.update(prefix.value.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CalibrationCorpus:
    """The texts vectors are measured on, and where they come from (recorded in every calibration)."""

    name: str
    texts: tuple[str, ...]
    sources: tuple[dict[str, Any], ...] = ()

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8") + b"\x1e")
        return h.hexdigest()

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "texts": len(self.texts),
            "sha256": self.sha256,
            "sources": list(self.sources),
        }


@dataclass(frozen=True, eq=False)
class Calibration:
    """Statistics of one prefix's unit vectors. ``digest`` (set by the file format) names it in
    responses: a client compares it to know two codes were made with the same statistics."""

    centre: np.ndarray  # float32 [dim]: per-dimension mean, the binary threshold
    lo: np.ndarray  # float32 [dim]: per-dimension minimum, the int8/uint8 range start
    hi: np.ndarray  # float32 [dim]: per-dimension maximum, the range end
    pooling: str  # pooling_id of the vectors
    fingerprint: str  # the backbone's
    identity: str  # vectors_identity of the prefix measured
    max_tokens: int  # token limit the corpus was embedded under
    corpus: dict[str, Any] = field(default_factory=dict)  # CalibrationCorpus.provenance()
    digest: str = ""
    scale: np.ndarray | None = None  # float32 [dim] > 0: per-dimension standard deviation
    projection: int | None = None  # seed of binary's ±1 projection (needs scale); None: no projection

    def __post_init__(self) -> None:
        if self.projection is not None and self.scale is None:
            raise ValueError("a calibration with a projection needs its scale")

    @property
    def dim(self) -> int:
        return int(self.centre.shape[0])

    @property
    def ranges(self) -> np.ndarray:
        """float32 [2, dim]: sentence-transformers' ``ranges`` argument (row 0 minimum, row 1 maximum)."""
        return np.vstack((self.lo, self.hi))

    def summary(self) -> dict[str, Any]:
        """Everything but the arrays (``GET /prefixes``)."""
        return {
            "digest": self.digest,
            "pooling": self.pooling,
            "max_tokens": self.max_tokens,
            "projection": self.projection,
            "corpus": {k: v for k, v in self.corpus.items() if k != "sources"},
        }


def unit_vectors(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def statistics(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(centre, lo, hi, scale), float32 [dim] each, of unit vectors [N, dim] (a constant dimension gets
    the scale :data:`MIN_SCALE`)."""
    if unit.ndim != 2 or len(unit) < 2:
        raise ValueError(f"calibration needs at least 2 vectors [N, dim], got shape {unit.shape}")
    x = unit.astype(np.float32, copy=False)
    scale = np.maximum(x.std(axis=0, dtype=np.float64), MIN_SCALE).astype(np.float32)
    return x.mean(axis=0, dtype=np.float64).astype(np.float32), x.min(axis=0), x.max(axis=0), scale


def projection_seed(identity: str) -> int:
    """Binary's projection seed for the vectors named ``identity``: its first 64 bits, so every prefix
    (and ``base``) of a concat projects differently (the same projection of their correlated vectors
    would repeat the same bits)."""
    return int(identity[:16], 16)


def calibrate(
    encoder: Encoder,
    prefix: LoadedPrefix,
    corpus: CalibrationCorpus,
    *,
    pooling: str,
    batch: int = 32,
    max_tokens: int | None = None,
) -> Calibration:
    """Embed ``corpus`` under ``prefix`` (a file prefix or the built-in ``base``) through ``encoder`` as
    the service does (truncated at its token limit for this prefix, or ``max_tokens`` when lower),
    L2-normalize, and measure. ``pooling``: the encoder's :func:`pooling_id`. The result has no
    ``digest`` yet: the file format (``service.registry.calibration.sealed``) sets it."""
    return calibrate_many(encoder, [prefix], corpus, pooling=pooling, batch=batch, max_tokens=max_tokens)[0]


def calibrate_many(
    encoder: Encoder,
    prefixes: Sequence[LoadedPrefix],
    corpus: CalibrationCorpus,
    *,
    pooling: str,
    batch: int = 32,
    max_tokens: int | None = None,
) -> list[Calibration]:
    """:func:`calibrate` for several prefixes at once: one pass over the corpus computes every prefix
    of a text in the same call (prefixes are grouped by their token limit, so each is measured at
    its own)."""
    if len({p.name for p in prefixes}) != len(prefixes):
        raise ValueError("calibrate_many: a prefix name is listed twice")
    base = next((p for p in prefixes if p.builtin), None)
    bank = PrefixBank.build([p for p in prefixes if not p.builtin], base=base)
    groups: dict[int, list[str]] = {}
    for p in prefixes:
        limit = token_limit(encoder, bank, bank.indices([p.name]))
        groups.setdefault(limit if max_tokens is None else min(limit, max_tokens), []).append(p.name)
    found: dict[str, Calibration] = {}
    for limit, names in groups.items():
        parts: list[np.ndarray] = []
        for i in range(0, len(corpus.texts), batch):
            vectors, _ = embed_sync(encoder, bank, names, corpus.texts[i : i + batch], max_tokens=limit)
            parts.append(unit_vectors(vectors))
        unit = np.concatenate(parts)
        for j, name in enumerate(names):
            centre, lo, hi, scale = statistics(unit[:, j])
            identity = vectors_identity(bank.get(name))
            found[name] = Calibration(
                centre=centre,
                lo=lo,
                hi=hi,
                pooling=pooling,
                fingerprint=encoder.spec.fingerprint,
                identity=identity,
                max_tokens=limit,
                corpus=corpus.provenance(),
                scale=scale,
                projection=projection_seed(identity),
            )
    return [found[p.name] for p in prefixes]
