"""Fixed representations of a target task's texts: the plain backbone and every prefix, via the engine.

All prefixes of a text are computed in the engine's batched forward (the served vectors, exactly).
Vectors are cached per (texts, prefix tensors, backbone, pooling, max length) in ``cache_dir`` as .npy,
so adding one prefix encodes only that prefix (and a re-calibrated file, whose digest changed but not
its tensors, none).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.engine.bank import PrefixBank
from service.engine.calibration import vectors_identity
from service.engine.prefix import LoadedPrefix, base_prefix
from service.engine.torch_encoder import TorchEncoder

PLAIN = "plain"  # the plain backbone: the engine's built-in `base` member


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode() + b"\x1e")
    return h.hexdigest()[:16]


def encode_all(
    encoder: TorchEncoder,
    prefixes: Sequence[LoadedPrefix],
    texts: Sequence[str],
    *,
    max_length: int = 128,
    cache_dir: Path | None = None,
    batch: int = 32,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """{``plain`` or prefix name: float32 [N, dim]} for ``texts``; unnormalized, as the engine pools."""
    tag = f"{encoder.spec.fingerprint}-{encoder.pooling}-{max_length}-{_texts_digest(texts)}"

    def cache_file(digest: str) -> Path | None:
        return None if cache_dir is None else cache_dir / f"{tag}-{digest}.npy"

    out: dict[str, np.ndarray] = {}
    todo: list[LoadedPrefix] = []
    for p in prefixes:
        f = cache_file(vectors_identity(p))
        if f is not None and f.is_file():
            out[p.name] = np.load(f)
        else:
            todo.append(p)
    plain_file = cache_file(PLAIN)
    want_plain = plain_file is None or not plain_file.is_file()
    if not want_plain:
        out[PLAIN] = np.load(plain_file)  # type: ignore[arg-type]
    base = base_prefix(encoder.spec)
    bank = PrefixBank.build(todo, base=base if want_plain else None)
    slots = list(range(len(bank)))
    keys = [PLAIN if p is base else p.name for p in bank.prefixes]
    limit = min(max_length, encoder.max_input_tokens, encoder.spec.max_text_positions - bank.max_shift(slots))
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    if slots:
        for i in tqdm(range(0, len(texts), batch), desc="encode", disable=not progress, mininterval=5):
            tb = encoder.tokenize(texts[i : i + batch], max_length=limit, truncate=True)
            vec = encoder.encode(tb, bank, slots)
            for j, k in enumerate(keys):
                chunks[k].append(vec[:, j])
    for n, parts in chunks.items():
        out[n] = np.concatenate(parts).astype(np.float32)
        f = cache_file(PLAIN if n == PLAIN else vectors_identity(bank.get(n)))
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, out[n])
    return out
