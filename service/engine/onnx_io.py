"""The exported graph's inputs: names, the "no prefix" bank, example inputs, and the ORT-vs-torch check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from service.engine.backbone import BackboneSpec
from service.engine.forward import PrefixedForward

INPUT_NAMES = (
    "input_ids",
    "attention_mask",
    "prefix_index",
    "prefix_keys",
    "prefix_values",
    "prefix_lengths",
    "prefix_shift",
)
BANK_INPUTS = INPUT_NAMES[3:]
OUTPUT_NAME = "pooled"

# (rows, seq, prefix lengths, padded prefix length). The export shape: every dynamic size > 1 and distinct,
# so torch.export keeps them all symbolic (it specializes sizes 0 and 1).
EXPORT_CASE: tuple[int, int, tuple[int, ...], int] = (6, 7, (4, 3), 4)
# The export shape, then P, Lp and lengths it never saw (a zero-length slot, a length-1 prefix, P=5, Lp=12).
VALIDATION_CASES: tuple[tuple[int, int, tuple[int, ...], int], ...] = (
    EXPORT_CASE,
    (9, 13, (12, 3, 0, 7, 1), 12),
    (2, 5, (1,), 1),
)


def plain_bank(spec: BackboneSpec) -> dict[str, np.ndarray]:
    """A one-slot bank of length 0: every prefix slot is masked out, so rows see only their text keys.

    That is the plain backbone in the prefixed graph: softmax over [masked slot ; text] equals softmax
    over the text alone (each row has at least one text key), and the shift 0 keeps the positions."""
    shape = (1, spec.num_layers, spec.num_heads, 1, spec.head_dim)
    zeros = np.zeros(shape, dtype=np.float32)
    no = np.zeros(1, dtype=np.int64)
    return dict(zip(BANK_INPUTS, (zeros, zeros.copy(), no, no.copy()), strict=True))


def example_inputs(
    spec: BackboneSpec, vocab: int, rows: int, seq: int, lengths: Sequence[int], prefix_len: int, seed: int
) -> tuple[torch.Tensor, ...]:
    """Random ids, right padding of 0-2 tokens, rows cycling over P prefixes, half of them PEFT-shifted."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, min(vocab, 1000), (rows, seq), generator=g)
    mask = torch.ones(rows, seq, dtype=torch.long)
    for r in range(rows):
        mask[r, max(1, seq - r % 3) :] = 0
    ids = ids * mask
    n = len(lengths)
    shape = (n, spec.num_layers, spec.num_heads, prefix_len, spec.head_dim)
    keys = torch.randn(shape, generator=g) * 0.5
    values = torch.randn(shape, generator=g) * 0.5
    plen = torch.tensor(list(lengths), dtype=torch.long)
    shift = torch.where(torch.arange(n) % 2 == 0, plen, torch.zeros_like(plen))
    index = torch.arange(rows) % n
    return ids, mask, index, keys, values, plen, shift


def model_vocab(forward: PrefixedForward) -> int:
    return int(getattr(forward.model.config, "vocab_size", 1000))


def max_abs_diff(model: bytes | str | Path, forward: PrefixedForward) -> float:
    """Largest |ORT - torch| of the pooled outputs over :data:`VALIDATION_CASES` and the plain path,
    with the CPU provider (the reference the cache stores)."""
    import onnxruntime as ort

    from service.engine.ort_runtime import CPU_PROVIDER, session_options

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, session_options(), providers=[CPU_PROVIDER])
    worst = 0.0
    with torch.inference_mode():
        for seed, (rows, seq, lengths, plen) in enumerate(VALIDATION_CASES):
            args = example_inputs(forward.spec, model_vocab(forward), rows, seq, lengths, plen, seed=seed + 1)
            ref = forward(*args).numpy()
            got = session.run([OUTPUT_NAME], {n: a.numpy() for n, a in zip(INPUT_NAMES, args, strict=True)})[
                0
            ]
            worst = max(worst, float(np.abs(got - ref).max()))
            # the plain backbone: torch without prefix inputs vs ORT with the empty bank
            ref = forward(args[0], args[1]).numpy()
            feed = {"input_ids": args[0].numpy(), "attention_mask": args[1].numpy()}
            feed |= {"prefix_index": np.zeros(rows, dtype=np.int64), **plain_bank(forward.spec)}
            got = session.run([OUTPUT_NAME], feed)[0]
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst
