"""The torch backend: B texts x P prefixes as B*P rows of one model call (or row chunks on CPU)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.encoder import TokenizedBatch, call_chunks
from service.engine.forward import PrefixedForward
from service.engine.tokenize import tokenize

# Called after every model call with (rows, padded tokens incl. prefix slots, seconds).
ForwardObserver = Callable[[int, int, float], None]

CPU_CHUNK_ROWS = 32  # measured on a worker thread: 32-row calls ~2x one large call on 2 cores (BENCHMARKS.md)


class TorchEncoder:
    backend = "torch"

    def __init__(
        self,
        backbone: Backbone,
        *,
        pooling: str = "mean",
        pooling_layers: int = 4,
        chunk_rows: int | None = None,
        max_input_tokens: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.spec = backbone.spec
        self.dim = backbone.spec.hidden_size
        self.device = str(backbone.device)
        self.dtype = str(backbone.dtype).removeprefix("torch.")
        self.pooling = pooling
        self.max_input_tokens = min(
            max_input_tokens or backbone.default_max_tokens, self.spec.max_text_positions
        )
        if chunk_rows is None:
            chunk_rows = CPU_CHUNK_ROWS if backbone.device.type == "cpu" else 0
        self.chunk_rows = chunk_rows
        self.forward = PrefixedForward(backbone.model, backbone.spec, pooling, pooling_layers)
        self.forward_calls = 0
        self.on_forward: ForwardObserver | None = None
        self._bank_version: str | None = None
        self._bank_tensors: tuple[torch.Tensor, ...] = ()

    def tokenize(self, texts: Sequence[str], *, max_length: int, truncate: bool) -> TokenizedBatch:
        return tokenize(self.backbone.tokenizer, texts, max_length=max_length, truncate=truncate)

    def _device_bank(self, bank: PrefixBank) -> tuple[torch.Tensor, ...]:
        # Uploaded once per bank snapshot, not once per call.
        if bank.version != self._bank_version:
            dev, dt = self.backbone.device, self.backbone.dtype
            self._bank_tensors = (
                bank.keys.to(dev, dt),
                bank.values.to(dev, dt),
                bank.lengths.to(dev),
                bank.shifts.to(dev),
            )
            self._bank_version = bank.version
        return self._bank_tensors

    def _call(
        self, batch: TokenizedBatch, prefix: tuple[torch.Tensor, ...] | None, slots: Sequence[int]
    ) -> torch.Tensor:
        dev = self.backbone.device
        reps = max(1, len(slots))
        ids = torch.from_numpy(batch.input_ids).to(dev).repeat_interleave(reps, 0)
        mask = torch.from_numpy(batch.attention_mask).to(dev).repeat_interleave(reps, 0)
        start = time.perf_counter()
        if prefix is None:
            out = self.forward(ids, mask)
            extra = 0
        else:
            index = torch.tensor(list(slots), dtype=torch.long, device=dev).repeat(batch.size)
            out = self.forward(ids, mask, index, *prefix)
            extra = int(prefix[0].shape[3])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.forward_calls += 1
        if self.on_forward is not None:
            self.on_forward(ids.shape[0], ids.shape[0] * (ids.shape[1] + extra), time.perf_counter() - start)
        return out

    @torch.inference_mode()
    def _run(
        self, batch: TokenizedBatch, prefix: tuple[torch.Tensor, ...] | None, slots: Sequence[int]
    ) -> np.ndarray:
        outs = [self._call(part, prefix, slots) for part in call_chunks(batch, self.chunk_rows, len(slots))]
        return torch.cat(outs).cpu().numpy()

    def encode(self, batch: TokenizedBatch, bank: PrefixBank, slots: Sequence[int]) -> np.ndarray:
        if not slots:
            return np.zeros((batch.size, 0, self.dim), dtype=np.float32)
        flat = self._run(batch, self._device_bank(bank), slots)
        return flat.reshape(batch.size, len(slots), self.dim)

    def encode_plain(self, batch: TokenizedBatch) -> np.ndarray:
        return self._run(batch, None, ())
