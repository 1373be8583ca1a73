"""The calibration record: how a :class:`~service.engine.calibration.Calibration` is stored.

One JSON object, in two places:

- a native prefix file's metadata key ``calibration`` (so the file's digest, the sha256 of the whole
  file, covers it, and a re-calibrated prefix has a new digest);
- for the built-in ``base``, the file ``base.<backbone fingerprint>.calibration.json`` in the prefix
  folder (a ``.json`` file: the prefix scan skips it), shipped with the default model's prefixes.

::

    {"format": "prefix-embed-calibration/1", "dim": 384, "pooling": "mean",
     "backbone_fingerprint": "bert-L6-H384-...", "vectors": "<sha256: what was measured>",
     "max_tokens": 256, "corpus": {"name", "texts", "sha256", "sources"}, "projection": <seed | null>,
     "centre": "<base64 little-endian float32 [dim]>", "min": "<...>", "max": "<...>", "scale": "<...>",
     "digest": "<sha256 of the canonical JSON of every other field>"}

``digest`` is verified on every read (a torn or altered record is refused, never applied) and is the
name responses give the calibration. ``vectors`` must equal the prefix's
:func:`~service.engine.calibration.vectors_identity`: a record copied onto other tensors is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.backbone import BackboneSpec
from service.engine.calibration import Calibration, vectors_identity
from service.engine.prefix import LoadedPrefix, base_prefix
from service.errors import InvalidPrefixFile, shown
from service.registry.reading import read_limited

FORMAT = "prefix-embed-calibration/1"
METADATA_KEY = "calibration"  # in a native prefix file's metadata
MAX_RECORD_BYTES = 256 * 1024  # 4 arrays of 4,096 dimensions in base64 are 88 KB
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ARRAYS = {"centre": "centre", "min": "lo", "max": "hi"}
_FIELDS = {
    "format",
    "dim",
    "pooling",
    "backbone_fingerprint",
    "vectors",
    "max_tokens",
    "corpus",
    "projection",
    "digest",
}


def base_file_name(spec: BackboneSpec) -> str:
    """The base calibration's file in the prefix folder, named by the backbone it measured."""
    return f"base.{spec.fingerprint}.calibration.json"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _array_text(a: np.ndarray) -> str:
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode("ascii")


def _unsealed(cal: Calibration) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "dim": cal.dim,
        "pooling": cal.pooling,
        "backbone_fingerprint": cal.fingerprint,
        "vectors": cal.identity,
        "max_tokens": cal.max_tokens,
        "corpus": cal.corpus,
        "projection": cal.projection,
        **{key: _array_text(getattr(cal, attr)) for key, attr in _ARRAYS.items()},
        **({"scale": _array_text(cal.scale)} if cal.scale is not None else {}),
    }


def sealed(cal: Calibration) -> Calibration:
    """``cal`` with its ``digest`` set: the sha256 of its canonical record."""
    return replace(cal, digest=hashlib.sha256(_canonical(_unsealed(cal))).hexdigest())


def record_text(cal: Calibration) -> str:
    """The JSON record of ``cal`` (sealed), as stored in metadata and in the base file."""
    cal = cal if cal.digest else sealed(cal)
    return _canonical({**_unsealed(cal), "digest": cal.digest}).decode()


def _array(doc: dict[str, Any], key: str, dim: int, source: str) -> np.ndarray:
    text = doc.get(key)
    if not isinstance(text, str):
        raise InvalidPrefixFile(f"{source}: calibration {key!r} must be a base64 string of float32")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPrefixFile(f"{source}: calibration {key!r} is not valid base64") from None
    if len(raw) != 4 * dim:
        raise InvalidPrefixFile(
            f"{source}: calibration {key!r} holds {len(raw)} bytes; {dim} float32 are {4 * dim}"
        )
    a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(a).all() or np.abs(a).max(initial=0.0) > 1.0 + 1e-5:
        raise InvalidPrefixFile(f"{source}: calibration {key!r} is not finite within [-1, 1] (unit vectors)")
    return a


def parse_record(text: str | bytes, spec: BackboneSpec, source: str) -> Calibration:
    """A record's text -> a verified :class:`Calibration`; :class:`InvalidPrefixFile` naming the problem."""
    if len(text) > MAX_RECORD_BYTES:
        raise InvalidPrefixFile(
            f"{source}: calibration record of {len(text)} bytes is over {MAX_RECORD_BYTES}"
        )
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidPrefixFile(f"{source}: calibration is not valid JSON ({shown(str(exc))})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidPrefixFile(f"{source}: calibration is not a {FORMAT} record")
    missing = sorted((_FIELDS | set(_ARRAYS)) - doc.keys())
    if missing:
        raise InvalidPrefixFile(f"{source}: calibration lacks {', '.join(missing)}")
    if doc["backbone_fingerprint"] != spec.fingerprint:
        raise InvalidPrefixFile(
            f"{source}: calibration measured backbone {shown(doc['backbone_fingerprint'])}, "
            f"this server runs {spec.fingerprint}"
        )
    dim, tokens = doc["dim"], doc["max_tokens"]
    if dim != spec.hidden_size or not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise InvalidPrefixFile(
            f"{source}: calibration dim {shown(dim)} / max_tokens {shown(tokens)}: expected {spec.hidden_size} "
            "and a positive token count"
        )
    fields = {k: doc[k] for k in doc if k != "digest"}
    digest = doc["digest"]
    if not isinstance(digest, str) or digest != hashlib.sha256(_canonical(fields)).hexdigest():
        raise InvalidPrefixFile(f"{source}: calibration digest does not match its content (torn or altered)")
    if not (
        isinstance(doc["pooling"], str)
        and isinstance(doc["corpus"], dict)
        and _HEX64.fullmatch(str(doc["vectors"]))
    ):
        raise InvalidPrefixFile(f"{source}: calibration pooling, corpus or vectors has the wrong type")
    centre, lo, hi = (_array(doc, key, dim, source) for key in _ARRAYS)
    if not ((lo <= centre) & (centre <= hi)).all():
        raise InvalidPrefixFile(f"{source}: calibration centre outside [min, max] in some dimension")
    scale = _array(doc, "scale", dim, source) if "scale" in doc else None
    projection = doc["projection"]
    if scale is not None and not (scale > 0).all():
        raise InvalidPrefixFile(f"{source}: calibration scale must be positive in every dimension")
    if projection is not None and (
        scale is None
        or not isinstance(projection, int)
        or isinstance(projection, bool)
        or not 0 <= projection < 2**64
    ):
        raise InvalidPrefixFile(
            f"{source}: calibration projection {shown(projection)} must be null or a seed in [0, 2^64) with a scale"
        )
    return Calibration(
        centre=centre,
        lo=lo,
        hi=hi,
        pooling=doc["pooling"],
        fingerprint=doc["backbone_fingerprint"],
        identity=doc["vectors"],
        max_tokens=tokens,
        corpus=doc["corpus"],
        digest=digest,
        scale=scale,
        projection=projection,
    )


def read_base_calibration(folder: Path, spec: BackboneSpec) -> Calibration | None:
    """The base calibration of ``folder`` for this backbone (None without its file); a bad file raises
    :class:`InvalidPrefixFile` (the registry lists it as rejected and keeps the last good one)."""
    name = base_file_name(spec)
    try:
        raw = read_limited(folder / name, MAX_RECORD_BYTES, name, root=folder).data
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidPrefixFile(f"{name}: cannot read: {exc.strerror or exc}") from None
    cal = parse_record(raw, spec, name)
    if cal.identity != vectors_identity(base_prefix(spec)):
        raise InvalidPrefixFile(f"{name}: calibration measured other vectors than this backbone's base")
    return cal


def file_calibration(
    meta: dict[str, str], prefix: LoadedPrefix, spec: BackboneSpec, source: str
) -> Calibration | None:
    """The calibration a native file's metadata records (None without one), verified against the
    prefix's tensors: a stale one (the tensors changed) refuses the file, as any other bad content."""
    text = meta.get(METADATA_KEY)
    if text is None:
        return None
    cal = parse_record(text, spec, source)
    if cal.identity != vectors_identity(prefix):
        raise InvalidPrefixFile(
            f"{source}: its calibration measured other tensors (stale after a change of key/value); "
            "calibrate it again: python -m service calibrate --prefix-dir DIR --prefix NAME"
        )
    return cal
