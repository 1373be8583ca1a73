"""The torch backend: B texts x P prefixes as one model call (or row chunks on CPU).

Each call feeds the B texts once; rows (text, prefix) fan out from the texts at the call's depth
(``row_text``): below it the trunk runs on B rows, above it on B x P rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from service.engine.backbone import Backbone
from service.engine.bank import PrefixBank
from service.engine.encoder import CallLoop, SlotGroup, TokenizedBatch
from service.engine.forward import PrefixedForward
from service.engine.tokenize import tokenize

CPU_CHUNK_ROWS = 32  # measured on a worker thread: 32-row calls ~2x one large call on 2 cores (BENCHMARKS.md)


class TorchEncoder(CallLoop):
    backend = "torch"
    providers: list[str] | None = None

    def __init__(
        self,
        backbone: Backbone,
        *,
        pooling: str = "mean",
        pooling_layers: int = 4,
        chunk_rows: int | None = None,
        max_input_tokens: int | None = None,
        group_by_depth: bool | None = None,
    ) -> None:
        super().__init__()
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
        if group_by_depth is not None:
            self.group_by_depth = group_by_depth
        self.forward = PrefixedForward(backbone.model, backbone.spec, pooling, pooling_layers)
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
                bank.firsts.to(dev),
            )
            self._bank_version = bank.version
        return self._bank_tensors

    @torch.inference_mode()
    def _forward(self, part: TokenizedBatch, bank: PrefixBank, group: SlotGroup, alone: bool) -> np.ndarray:
        dev = self.backbone.device
        ids = torch.from_numpy(part.input_ids).to(dev)
        mask = torch.from_numpy(part.attention_mask).to(dev)
        p = len(group.slots)
        index = torch.tensor(group.slots, dtype=torch.long, device=dev).repeat(part.size)
        row_text = torch.arange(part.size, device=dev).repeat_interleave(p)
        out = self.forward(ids, mask, index, *self._device_bank(bank), row_text, group.fan_out)
        return out.cpu().numpy().reshape(part.size, -1, self.dim)
