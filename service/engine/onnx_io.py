"""The exported graph's inputs: names, the "no prefix" bank, example inputs, and the ORT-vs-torch check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

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
    "prefix_first",
    "row_text",
)
BANK_INPUTS = INPUT_NAMES[3:8]
OUTPUT_NAME = "pooled"

# (texts, seq, prefix lengths, padded prefix length); rows = texts x prefixes. The export shape: every
# dynamic size > 1 and distinct (texts 3, P 2, rows 6, seq 7, Lp 4), so torch.export keeps them all
# symbolic (it specializes sizes 0 and 1).
EXPORT_CASE: tuple[int, int, tuple[int, ...], int] = (3, 7, (4, 3), 4)
# The export shape, then P, Lp and lengths it never saw (a zero-length slot, a length-1 prefix, P=5, Lp=12).
VALIDATION_CASES: tuple[tuple[int, int, tuple[int, ...], int], ...] = (
    EXPORT_CASE,
    (3, 13, (12, 3, 0, 7, 1), 12),
    (2, 5, (1,), 1),
)


class FixedDepth(nn.Module):
    """:class:`PrefixedForward` with its fan-out depth fixed (it shapes the control flow, so an exported
    graph holds one depth) and every input a tensor: what is exported, and the reference it is checked
    against."""

    def __init__(self, forward: PrefixedForward, fan_out: int) -> None:
        super().__init__()
        self.inner = forward
        self.fan_out = fan_out

    @property
    def spec(self) -> BackboneSpec:
        return self.inner.spec

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_index: torch.Tensor,
        prefix_keys: torch.Tensor,
        prefix_values: torch.Tensor,
        prefix_lengths: torch.Tensor,
        prefix_shift: torch.Tensor,
        prefix_first: torch.Tensor,
        row_text: torch.Tensor,
    ) -> torch.Tensor:
        return self.inner(
            input_ids,
            attention_mask,
            prefix_index,
            prefix_keys,
            prefix_values,
            prefix_lengths,
            prefix_shift,
            prefix_first,
            row_text,
            self.fan_out,
        )


def plain_bank(spec: BackboneSpec) -> dict[str, np.ndarray]:
    """A one-slot bank of length 0: every prefix slot is masked out, so rows see only their text keys.

    That is the plain backbone in the prefixed graph: softmax over [masked slot ; text] equals softmax
    over the text alone (each row has at least one text key), and the shift 0 keeps the positions."""
    shape = (1, spec.num_layers, spec.num_heads, 1, spec.head_dim)
    zeros = np.zeros(shape, dtype=np.float32)
    no = np.zeros(1, dtype=np.int64)
    return dict(zip(BANK_INPUTS, (zeros, zeros.copy(), no, no.copy(), no.copy()), strict=True))


def rows_of(texts: int, prefixes: int) -> dict[str, np.ndarray]:
    """``prefix_index`` and ``row_text`` of texts x prefixes rows, text-major (text b's rows together)."""
    p = max(1, prefixes)
    return {
        "prefix_index": np.tile(np.arange(p, dtype=np.int64), texts),
        "row_text": np.repeat(np.arange(texts, dtype=np.int64), p),
    }


def example_inputs(
    spec: BackboneSpec,
    vocab: int,
    texts: int,
    seq: int,
    lengths: Sequence[int],
    prefix_len: int,
    seed: int,
    fan_out: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random ids, right padding of 0-2 tokens, every text under P prefixes. Prefixes start at layers
    fan_out..L (L: acts nowhere, as ``base``), zero below their start; at fan-out 0 the even prefixes
    that start at layer 0 are PEFT-shifted."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, min(vocab, 1000), (texts, seq), generator=g)
    mask = torch.ones(texts, seq, dtype=torch.long)
    for r in range(texts):
        mask[r, max(1, seq - r % 3) :] = 0
    ids = ids * mask
    n = len(lengths)
    layers = spec.num_layers
    shape = (n, layers, spec.num_heads, prefix_len, spec.head_dim)
    first = fan_out + torch.arange(n) % (layers - fan_out + 1)
    below = (torch.arange(layers).unsqueeze(0) < first.unsqueeze(1))[:, :, None, None, None]
    keys = (torch.randn(shape, generator=g) * 0.5).masked_fill(below, 0.0)
    values = (torch.randn(shape, generator=g) * 0.5).masked_fill(below, 0.0)
    plen = torch.tensor(list(lengths), dtype=torch.long)
    shifted = (torch.arange(n) % 2 == 0) & (first == 0)
    shift = torch.where(shifted, plen, torch.zeros_like(plen))
    rows = {k: torch.from_numpy(v) for k, v in rows_of(texts, n).items()}
    return ids, mask, rows["prefix_index"], keys, values, plen, shift, first, rows["row_text"]


def model_vocab(forward: FixedDepth) -> int:
    return int(getattr(forward.inner.model.config, "vocab_size", 1000))


def max_abs_diff(model: bytes | str | Path, forward: FixedDepth) -> float:
    """Largest |ORT - torch| of the pooled outputs over :data:`VALIDATION_CASES` and the plain path,
    with the CPU provider (the reference the cache stores)."""
    import onnxruntime as ort

    from service.engine.ort_runtime import CPU_PROVIDER, disabled_optimizers, session_options

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(
        source,
        session_options(),
        providers=[CPU_PROVIDER],
        disabled_optimizers=disabled_optimizers([CPU_PROVIDER]),
    )
    worst = 0.0
    with torch.inference_mode():
        for seed, (rows, seq, lengths, plen) in enumerate(VALIDATION_CASES):
            args = example_inputs(
                forward.spec,
                model_vocab(forward),
                rows,
                seq,
                lengths,
                plen,
                seed=seed + 1,
                fan_out=forward.fan_out,
            )
            ref = forward(*args).numpy()
            got = session.run([OUTPUT_NAME], {n: a.numpy() for n, a in zip(INPUT_NAMES, args, strict=True)})[
                0
            ]
            worst = max(worst, float(np.abs(got - ref).max()))
            # the plain backbone: torch without prefix inputs vs ORT with the empty bank
            ref = forward.inner(args[0], args[1]).numpy()
            feed = {"input_ids": args[0].numpy(), "attention_mask": args[1].numpy()}
            feed |= {**rows_of(rows, 1), **plain_bank(forward.spec)}
            got = session.run([OUTPUT_NAME], feed)[0]
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst
