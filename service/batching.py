"""Dynamic batcher between the HTTP layer and the encoder (interface; issue 4 grows the internals).

The HTTP layer only validates, calls :meth:`Batcher.embed` and awaits. Inference never runs on
the event loop: one worker thread owns the encoder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.engine.bank import PrefixBank
from service.engine.encoder import Encoder
from service.engine.tokenize import text_token_limit
from service.errors import DeadlineExceeded, QueueFull


@dataclass(frozen=True)
class EmbedOutput:
    vectors: np.ndarray  # float32 [B, P, dim], unnormalized
    prompt_tokens: int


class Batcher:
    """``await embed(texts, bank, slots)`` -> vectors of every text under every slot, one snapshot."""

    def __init__(self, encoder: Encoder, *, max_queue: int = 1024, timeout_s: float = 30.0) -> None:
        self.encoder = encoder
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="prefix-embed-worker"
        )
        self._pending = 0

    @property
    def queue_depth(self) -> int:
        return self._pending

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._pool.shutdown(wait=True)

    def _run(
        self, texts: Sequence[str], bank: PrefixBank, slots: Sequence[int], truncate: bool, deadline: float
    ) -> EmbedOutput:
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"request waited longer than {self.timeout_s:g} s in the queue")
        limit = text_token_limit(self.encoder.spec, self.encoder.max_input_tokens, bank.max_shift(slots))
        batch = self.encoder.tokenize(texts, max_length=limit, truncate=truncate)
        return EmbedOutput(self.encoder.encode(batch, bank, slots), sum(batch.lengths))

    async def embed(
        self, texts: Sequence[str], bank: PrefixBank, slots: Sequence[int], *, truncate: bool = True
    ) -> EmbedOutput:
        if self._pending >= self.max_queue:
            raise QueueFull(f"queue is full ({self.max_queue} requests); retry later")
        self._pending += 1
        deadline = time.monotonic() + self.timeout_s
        try:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._pool, self._run, texts, bank, slots, truncate, deadline)
            try:
                return await asyncio.wait_for(fut, timeout=self.timeout_s)
            except TimeoutError:
                raise DeadlineExceeded(f"request took longer than {self.timeout_s:g} s") from None
        finally:
            self._pending -= 1
